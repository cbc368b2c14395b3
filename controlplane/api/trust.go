package api

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
)

// Trust reports the control plane's public key facts for GET /api/v1/trust: only public keys and
// fingerprints, never private material.
type Trust interface {
	Trust(ctx context.Context) (TrustInfo, error)
}

// TrustKey is a public key by its fingerprint (hex SHA-256 of the PKIX DER encoding).
type TrustKey struct {
	ID           string `json:"id"`
	PublicKeyPEM string `json:"public_key_pem,omitempty"`
	Revoked      bool   `json:"revoked,omitempty"`
}

// TrustDocument describes the trust document the control plane publishes to devices.
type TrustDocument struct {
	Version  uint64    `json:"version"`
	IssuedAt time.Time `json:"issued_at,omitzero"`
	Root     []string  `json:"root"`    // root key fingerprints that sign the document
	Revoked  []string  `json:"revoked"` // key ids the document revokes
	SHA256   string    `json:"sha256"`  // of the signed envelope as published, to compare with a device's copy
}

// TrustInfo is the body of GET /api/v1/trust.
type TrustInfo struct {
	// ControlKey signs desired states; devices pin it or learn it from the trust document.
	ControlKey TrustKey `json:"control_key"`
	// Source is "trust_document" (--trust-doc) or "pinned" (release keys given by --trust).
	Source string `json:"source"`
	// ReleaseKeys may sign bundles the registry accepts.
	ReleaseKeys []TrustKey `json:"release_keys"`
	// ControlKeys are the control keys the trust document lets devices accept.
	ControlKeys []TrustKey `json:"control_keys"`
	// BundleRecipient is the age recipient encrypted bundles' keys are sealed to (what
	// `bundle build --encrypt-to` takes); DatasetRecipient the one captured samples are encrypted to.
	BundleRecipient  string `json:"bundle_recipient,omitempty"`
	DatasetRecipient string `json:"dataset_recipient,omitempty"`
	// Document is set when the keys come from a trust document.
	Document *TrustDocument `json:"document,omitempty"`
}

func (h *handlers) getTrust(c *gin.Context) {
	if h.cfg.Trust == nil {
		fail(c, http.StatusNotImplemented, "not_implemented", "this control plane reports no key facts")
		return
	}
	info, err := h.cfg.Trust.Trust(c.Request.Context())
	if err != nil {
		fail(c, http.StatusInternalServerError, "internal", "read the trust facts: "+err.Error())
		return
	}
	c.JSON(http.StatusOK, info)
}
