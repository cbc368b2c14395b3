package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/enroll"
	"github.com/edgefleet/edgefleet/controlplane/store"
	wenroll "github.com/edgefleet/edgefleet/internal/enroll"
)

// enrollAPI completes a redeem with what the device needs besides its credentials (broker,
// prefix, control key, trust document) and disconnects a revoked device's live session.
type enrollAPI struct {
	svc        *enroll.Service
	broker     func() string
	prefix     string
	controlPEM []byte
	trustDoc   []byte
	disconnect func(device string) // nil with an external broker
	log        *slog.Logger
}

func (e enrollAPI) Create(ctx context.Context, group string, uses int, expiresIn time.Duration, by string) (string, enroll.Enrollment, error) {
	return e.svc.Create(ctx, group, uses, expiresIn, by)
}

func (e enrollAPI) Redeem(ctx context.Context, req wenroll.Request, from string) (wenroll.Response, error) {
	r, err := e.svc.Redeem(ctx, req.Token, req.Device, from)
	if err != nil {
		return wenroll.Response{}, err
	}
	resp := wenroll.Response{Device: r.Device, Group: r.Group, Username: r.Device, Password: r.Password,
		Broker: e.broker(), Prefix: e.prefix, ControlKey: string(e.controlPEM)}
	if len(e.trustDoc) > 0 {
		resp.TrustDocument = json.RawMessage(e.trustDoc)
	}
	return resp, nil
}

func (e enrollAPI) Revoke(ctx context.Context, device, by string) error {
	if err := e.svc.Revoke(ctx, device, by); err != nil {
		return err
	}
	if e.disconnect != nil {
		e.disconnect(device)
	} else {
		e.log.Warn("device revoked; with an external broker its live session stays until the broker reloads the regenerated password file (SIGHUP) and the device reconnects", "device", device)
	}
	return nil
}

// writeMosquitto rewrites the Mosquitto password and ACL files after credentials changed.
func writeMosquitto(ctx context.Context, svc *enroll.Service, dir string, o enroll.MosquittoOptions) error {
	creds, err := svc.Credentials(ctx)
	if err != nil {
		return fmt.Errorf("read device credentials: %w", err)
	}
	return enroll.WriteMosquittoFiles(dir, creds, o)
}

// WriteMosquittoFiles writes the Mosquitto password and ACL files into out from the store of a
// control plane that is not running on dataDir (the store is locked while one runs; use
// --mosquitto-dir then). It returns how many devices have a password line.
func WriteMosquittoFiles(ctx context.Context, dataDir, out, prefix, user string) (int, error) {
	st, err := store.OpenBolt(filepath.Join(dataDir, "controlplane.db"))
	if err != nil {
		return 0, err
	}
	defer st.Close()
	creds, err := enroll.ListCredentials(ctx, st)
	if err != nil {
		return 0, fmt.Errorf("read device credentials: %w", err)
	}
	n := 0
	for _, c := range creds {
		if !c.Revoked && c.MosquittoHash != "" {
			n++
		}
	}
	return n, enroll.WriteMosquittoFiles(out, creds, enroll.MosquittoOptions{Prefix: prefix, ControlPlaneUser: user})
}
