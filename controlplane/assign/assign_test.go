package assign

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane/store"
	"github.com/edgefleet/edgefleet/internal/wire"
	"github.com/edgefleet/edgefleet/ota/desired"
	"github.com/edgefleet/edgefleet/ota/sign"
)

// TestResendStale: a desired state an online device has not picked up (it still reports an older
// generation) a minute after it was issued goes out again; one just issued, one the device holds,
// and one of an offline device do not.
func TestResendStale(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := sign.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var sent []string
	pub := func(_ context.Context, topic string, _ []byte, _ byte, _ bool) error {
		mu.Lock()
		defer mu.Unlock()
		sent = append(sent, topic)
		return nil
	}
	topics := wire.NewTopics("edgefleet")
	a := New(store.NewMemory(), signer, pub, topics, 0, slog.New(slog.NewTextHandler(io.Discard, nil)))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a.now = func() time.Time { return now }
	ctx := t.Context()
	for _, dev := range []string{"missed", "holds-it", "offline", "fresh"} {
		if dev == "fresh" {
			now = now.Add(50 * time.Second)
		}
		if _, err := a.Update(ctx, dev, 0, func(m map[string]desired.Model) error {
			m["wake"] = desired.Model{Bundle: "b1"}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(20 * time.Second) // 70 s after the first three, 20 s after "fresh"
	sent = nil
	online := map[string]uint64{"missed": 0, "holds-it": 1, "fresh": 0}
	n, err := a.ResendStale(ctx, online, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{topics.Desired("missed")}; n != 1 || !slices.Equal(sent, want) {
		t.Fatalf("re-sent %d: %v, want %v", n, sent, want)
	}
}
