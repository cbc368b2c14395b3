package main

import (
	"io"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/deploy"
)

func TestParseStages(t *testing.T) {
	got, err := parseStages("1:30s, 10%:5m:approve,100%", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	want := []deploy.Stage{
		{Devices: 1, Bake: deploy.Duration(30 * time.Second)},
		{Percent: 10, Bake: deploy.Duration(5 * time.Minute), Approval: true},
		{Percent: 100, Bake: deploy.Duration(time.Minute)},
	}
	if len(got) != len(want) {
		t.Fatalf("%+v", got)
	}
	for i := range want {
		if got[i].Devices != want[i].Devices || got[i].Percent != want[i].Percent || got[i].Bake != want[i].Bake || got[i].Approval != want[i].Approval {
			t.Fatalf("stage %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"", "x", "10%:soon", "1:2:3"} {
		if _, err := parseStages(bad, time.Minute); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	spec, err := parseCreate([]string{"--bundle", "wake@2.0.0", "--groups", "a,b", "--selector", "arch=arm64"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Bundle != "wake@2.0.0" || len(spec.Target.Groups) != 2 || spec.Target.Selector != "arch=arm64" || len(spec.Stages) != 3 || spec.Validate() != nil {
		t.Fatalf("spec %+v (validate: %v)", spec, spec.Validate())
	}
}
