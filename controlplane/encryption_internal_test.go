package controlplane

import (
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/internal/wire"
	"github.com/edgefleet/edgefleet/ota/bundle"
)

// TestCompatibleEncrypted: an encrypted bundle goes only to devices that reported a recipient to
// wrap its key for; a device that has not reported yet is refused (deny by default), unlike for a
// plain bundle, where the device checks the requirements itself.
func TestCompatibleEncrypted(t *testing.T) {
	plain := &bundle.Manifest{Name: "wake", Version: "1.0.0"}
	enc := &bundle.Manifest{Name: "wake", Version: "1.0.0", Encryption: &bundle.Encryption{Scheme: bundle.EncryptionAgeX25519}}
	withRecipient := fleet.Device{ID: "a", Reported: &wire.Reported{Runtime: &wire.RuntimeFacts{AgeRecipient: "age1xyz"}}}
	noRuntime := fleet.Device{ID: "b", Reported: &wire.Reported{}}
	noRecipient := fleet.Device{ID: "c", Reported: &wire.Reported{Runtime: &wire.RuntimeFacts{ORTVersion: "1.22.0"}}}
	notReported := fleet.Device{ID: "d"}
	cases := []struct {
		name   string
		d      fleet.Device
		m      *bundle.Manifest
		refuse bool
	}{
		{"plain, not reported", notReported, plain, false},
		{"plain, no recipient", noRecipient, plain, false},
		{"encrypted, recipient", withRecipient, enc, false},
		{"encrypted, no runtime facts", noRuntime, enc, true},
		{"encrypted, old agent without recipient", noRecipient, enc, true},
		{"encrypted, not reported", notReported, enc, true},
	}
	for _, tc := range cases {
		why := compatible(tc.d, tc.m)
		if (why != "") != tc.refuse {
			t.Errorf("%s: compatible = %q, refuse %v", tc.name, why, tc.refuse)
		}
		if tc.refuse && !strings.Contains(why, "encryption recipient") {
			t.Errorf("%s: reason %q does not say what is missing", tc.name, why)
		}
	}
}
