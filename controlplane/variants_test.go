package controlplane

import (
	"testing"

	"github.com/edgefleet/edgefleet/controlplane/bundles"
	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/internal/wire"
	"github.com/edgefleet/edgefleet/ota/bundle"
)

func TestChooseVariant(t *testing.T) {
	v := func(id string, size, peak int64, eps ...string) candidate {
		return candidate{bundles.Record{ID: id, Size: size}, &bundle.Manifest{Requirements: bundle.Requirements{PeakMemoryBytes: peak, ExecutionProviders: eps}}}
	}
	dev := func(eps ...string) fleet.Device {
		return fleet.Device{ID: "d", Reported: &wire.Reported{Runtime: &wire.RuntimeFacts{ExecutionProviders: eps}}}
	}
	fp32, int8 := v("fp32", 400, 40<<20, "cpu"), v("int8", 100, 12<<20, "cpu")
	trt := v("trt", 500, 60<<20, "tensorrt")
	cases := []struct {
		name  string
		dev   fleet.Device
		named string
		fits  []candidate
		want  string
	}{
		{"named variant fits", dev("cpu"), "fp32", []candidate{fp32, int8}, "fp32"},
		{"named int8 fits", dev("cpu"), "int8", []candidate{fp32, int8}, "int8"},
		{"named does not fit: smallest peak memory", dev("cpu"), "fp32", []candidate{int8}, "int8"},
		{"accelerator variant for a device with that provider", dev("tensorrt", "cuda", "cpu"), "fp32", []candidate{fp32, int8, trt}, "trt"},
		{"accelerator variant ignored without the provider", dev("cpu"), "trt", []candidate{fp32, int8}, "int8"},
		{"equal peak memory: smaller file", dev("cpu"), "x", []candidate{v("b", 300, 1), v("a", 200, 1)}, "a"},
		{"device that never reported", fleet.Device{ID: "d"}, "fp32", []candidate{fp32, int8}, "fp32"},
	}
	for _, c := range cases {
		if got := chooseVariant(c.dev, c.named, c.fits); got.rec.ID != c.want {
			t.Errorf("%s: chose %s, want %s", c.name, got.rec.ID, c.want)
		}
	}
}
