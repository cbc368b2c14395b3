package controlplane_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/controlplane"
	"github.com/edgefleet/edgefleet/controlplane/retrain"
	"github.com/edgefleet/edgefleet/internal/fleettest"
)

// TestRetrainWebhook: an on-demand retraining request reaches the webhook as a signed CloudEvent
// after the receiver's first failure; without a webhook the routes say how to configure one.
func TestRetrainWebhook(t *testing.T) {
	const secret = "webhook-secret-for-tests"
	var mu sync.Mutex
	var got []retrain.CloudEvent
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		calls++
		if !retrain.Verify(secret, body, r.Header.Get(retrain.SignatureHeader)) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if calls == 1 {
			w.WriteHeader(http.StatusServiceUnavailable) // the pipeline is restarting
			return
		}
		var ev retrain.CloudEvent
		json.Unmarshal(body, &ev)
		got = append(got, ev)
	}))
	defer srv.Close()
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{Retrain: controlplane.RetrainConfig{URL: srv.URL, Secret: secret}})
	var out struct{ ID string }
	if code, body := cp.Do("POST", "/api/v1/retrain", map[string]any{"model": "wake", "version": "1.1.0", "groups": []string{"line-a"}, "datasets": []string{"ds-1"}}, &out); code != 202 || out.ID == "" {
		t.Fatalf("retrain request: %d %s", code, body)
	}
	if code, _ := cp.Do("POST", "/api/v1/retrain", map[string]any{"reason": "no model"}, nil); code != 400 {
		t.Errorf("request without a model: %d, want 400", code)
	}
	fleettest.Eventually(t, 20*time.Second, "event delivered after one retry", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 1
	})
	ev := got[0]
	if ev.ID != out.ID || ev.Type != retrain.TypeManual || ev.Data.Model != "wake" || ev.Data.Datasets[0] != "ds-1" || ev.Data.Reason == "" || calls != 2 {
		t.Fatalf("event %+v after %d calls", ev, calls)
	}
	var lists struct{ Pending, Dead []retrain.Delivery }
	if code, _ := cp.Do("GET", "/api/v1/retrain", nil, &lists); code != 200 || len(lists.Pending) != 0 || len(lists.Dead) != 0 {
		t.Fatalf("after delivery: %d %+v", code, lists)
	}

	plain := fleettest.StartControlPlane(t, fleettest.CPOptions{})
	if code, body := plain.Do("GET", "/api/v1/retrain", nil, nil); code != 501 || !json.Valid([]byte(body)) {
		t.Fatalf("without a webhook: %d %s", code, body)
	}
}
