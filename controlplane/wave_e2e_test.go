package controlplane_test

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/updater"
	"github.com/edgefleet/edgefleet/internal/fleettest"
)

// TestOTAWaveWithCarousel: 50 agents of one group get the same bundle at once. With the carousel
// the control plane sends the bundle about once, not once per device; a device that was offline
// during the wave had nothing queued for it and pulls the bundle itself when it is back.
func TestOTAWaveWithCarousel(t *testing.T) {
	for _, carouselOn := range []bool{true, false} {
		t.Run(fmt.Sprintf("carousel=%v", carouselOn), func(t *testing.T) { wave(t, carouselOn) })
	}
}

func wave(t *testing.T, carouselOn bool) {
	const n = 50
	fleettest.Models(t)
	k := fleettest.NewKeys(t)
	carouselMin := 10
	if !carouselOn {
		carouselMin = 0
	}
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustKeys: []string{k.PubPath}, CarouselMin: carouselMin})
	path, id := fleettest.BuildBundle(t, k, "hello_deepa.onnx", "wake", "1.0.0")
	cp.Push(path)
	st, _ := os.Stat(path)
	size := float64(st.Size())

	agents := make([]*fleettest.Agent, n)
	var wg sync.WaitGroup
	for i := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			agents[i] = fleettest.OTAAgent(t, cp, k, fmt.Sprintf("wave-%02d", i), "wave")
		}()
	}
	wg.Wait()
	fleettest.Eventually(t, 60*time.Second, "all agents online", func() bool {
		on := 0
		for _, d := range cp.Devices() {
			if d.Online {
				on++
			}
		}
		return on == n
	})
	offline := agents[n-1]
	offline.Kill()
	fleettest.Eventually(t, 30*time.Second, "one agent offline", func() bool { return !cp.Devices()[offline.ID].Online })

	start := time.Now()
	code, body := cp.Do("PUT", "/api/v1/groups/wave/desired", map[string]string{"bundle": "wake@1.0.0"}, nil)
	if code != 200 {
		t.Fatalf("group assign: %d %s", code, body)
	}
	fleettest.Eventually(t, 120*time.Second, "the online agents installed the bundle", func() bool {
		done := 0
		for i := 0; i < n-1; i++ {
			if m := cp.Model(agents[i].ID, "wake"); m.Active == id && m.State == updater.StepCommitted {
				done++
			}
		}
		return done == n-1
	})
	elapsed := time.Since(start)
	direct, carousel := cp.Metric("edgefleet_bundle_bytes_sent_total"), cp.Metric("edgefleet_bundle_carousel_bytes_total")
	t.Logf("wave of %d: installed in %v; bundle %.0f bytes; carousel %.0f bytes, per-device %.0f bytes; total %.2fx the bundle",
		n-1, elapsed.Round(time.Millisecond), size, carousel, direct, (carousel+direct)/size)
	if !carouselOn {
		// The reference: every device pulls the whole bundle.
		if direct < float64(n-1)*size*0.9 || carousel != 0 {
			t.Fatalf("without a carousel %d devices pulled only %.0f bytes of a %.0f byte bundle", n-1, direct, size)
		}
		return
	}
	if carousel == 0 {
		t.Fatal("the carousel did not run")
	}
	if carousel+direct >= 2*size {
		t.Fatalf("control plane sent %.0f bytes for a %.0f byte bundle to %d devices: the carousel did not save traffic", carousel+direct, size, n-1)
	}

	// Back online: nothing was queued for it (blocks and carousels are QoS 0), so it pulls.
	before := cp.Metric("edgefleet_bundle_bytes_sent_total")
	offline.Start(t)
	waitModel(t, cp, offline.ID, "wake", "late device installed", func(a, s, _ string) bool { return a == id && s == updater.StepCommitted })
	pulled := cp.Metric("edgefleet_bundle_bytes_sent_total") - before
	t.Logf("late device pulled %.0f bytes", pulled)
	if pulled < size*0.9 {
		t.Fatalf("late device pulled only %.0f bytes of a %.0f byte bundle: did it get data queued while offline?", pulled, size)
	}
}

// TestTwoModelsUpdatedIndependently: a device serves a detector and a classifier; updating one
// leaves the other's install untouched.
func TestTwoModelsUpdatedIndependently(t *testing.T) {
	fleettest.Models(t)
	k := fleettest.NewKeys(t)
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustKeys: []string{k.PubPath}})
	ag := fleettest.OTAAgent(t, cp, k, "two", "g")
	addr := ag.ListenAddr(t)
	wake, idWake := fleettest.BuildBundle(t, k, "hello_deepa.onnx", "wake", "1.0.0")
	cls, idCls := fleettest.BuildBundle(t, k, "ocr_cls.onnx", "cls", "1.0.0")
	wake2, idWake2 := fleettest.RebuildWith(t, k, wake, "1.1.0", nil)
	for _, p := range []string{wake, cls, wake2} {
		cp.Push(p)
	}
	fleettest.Eventually(t, 30*time.Second, "registered", func() bool { _, ok := cp.Devices()["two"]; return ok })
	assign(t, cp, "two", "wake@1.0.0", "0s")
	assign(t, cp, "two", "cls@1.0.0", "0s")
	waitModel(t, cp, "two", "wake", "wake installed", func(a, s, _ string) bool { return a == idWake && s == updater.StepCommitted })
	waitModel(t, cp, "two", "cls", "cls installed", func(a, s, _ string) bool { return a == idCls && s == updater.StepCommitted })
	clsState, _ := os.ReadFile(ag.DataDir + "/models/cls/state.json")

	assign(t, cp, "two", "wake@1.1.0", "0s")
	waitModel(t, cp, "two", "wake", "wake updated", func(a, s, _ string) bool { return a == idWake2 && s == updater.StepCommitted })
	if m := cp.Model("two", "cls"); m.Active != idCls || m.State != updater.StepCommitted {
		t.Fatalf("cls changed when wake was updated: %+v", m)
	}
	after, _ := os.ReadFile(ag.DataDir + "/models/cls/state.json")
	// The generation it was last confirmed under moves on; nothing about its install may.
	var s0, s1 updater.State
	json.Unmarshal(clsState, &s0)
	json.Unmarshal(after, &s1)
	if *s0.Active != *s1.Active || s0.Step != s1.Step || !s0.Since.Equal(s1.Since) || s1.Standby != nil {
		t.Fatalf("cls install changed when wake was updated:\nbefore %s\nafter  %s", clsState, after)
	}
	if servedBundle(t, addr, "cls") != idCls || servedBundle(t, addr, "wake") != idWake2 {
		t.Fatal("served models differ from the reported ones")
	}
}
