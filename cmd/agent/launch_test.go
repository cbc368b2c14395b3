package main

import (
	"slices"
	"testing"
	"time"
)

func TestParseLaunch(t *testing.T) {
	env := map[string]string{"EDGEFLEET_DATA": "/env/data"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cases := map[string]struct {
		args    []string
		data    string
		timeout time.Duration
		starts  int
		rest    []string
		err     bool
	}{
		"run flags pass through, values kept with their flags": {
			args: []string{"--id", "dev-1", "--broker", "mqtt://b:1883", "--trial-timeout", "30s", "--data", "/d", "--print-config", "--log-level=debug"},
			data: "/d", timeout: 30 * time.Second,
			rest: []string{"--id", "dev-1", "--broker", "mqtt://b:1883", "--data", "/d", "--print-config", "--log-level=debug"},
		},
		"data from the environment": {
			args: []string{"-id", "dev-1", "-max-trial-starts=5"}, data: "/env/data", starts: 5, rest: []string{"-id", "dev-1"},
		},
		"after -- everything passes": {
			args: []string{"--trial-timeout=1m", "--", "--trial-timeout", "x"}, data: "/env/data", timeout: time.Minute,
			rest: []string{"--trial-timeout", "x"},
		},
		"bad duration":  {args: []string{"--trial-timeout", "soon"}, err: true},
		"missing value": {args: []string{"--data"}, err: true},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			cfg, _, err := parseLaunch(c.args, lookup)
			if c.err {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.DataDir != c.data || cfg.TrialTimeout != c.timeout || cfg.MaxTrialStarts != c.starts || !slices.Equal(cfg.Args, c.rest) {
				t.Fatalf("got data %q timeout %v starts %d args %q", cfg.DataDir, cfg.TrialTimeout, cfg.MaxTrialStarts, cfg.Args)
			}
		})
	}
}
