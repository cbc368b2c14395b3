package agent

import (
	"fmt"
	"strconv"
	"strings"
)

// Fault is one injected misbehaviour, keyed by the bundle version that exhibits it, so a bad
// release can be simulated while the previous one behaves (INTERFACE.md, `--fault`).
type Fault struct {
	Bundle   string  // NAME@VERSION, or "" for every bundle
	Errors   float64 // fraction of inference calls that fail
	Install  string  // "fail" or "smoke-fail"
	Latency  float64 // multiplier
	Shift    float64 // output shift
	Offline  float64 // fraction of devices offline
	Fraction float64 // fraction of the fleet affected (simulate)
	Group    string  // only this group (simulate)
}

// ParseFault parses 'bundle=wake@1.1.0,errors=0.05' and friends.
func ParseFault(s string) (Fault, error) {
	f := Fault{Fraction: 1}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return Fault{}, fmt.Errorf("fault %q: %q is not key=value", s, kv)
		}
		num := func() (float64, error) {
			x, err := strconv.ParseFloat(strings.TrimSuffix(v, "x"), 64)
			if err != nil || x < 0 {
				return 0, fmt.Errorf("fault %q: %s=%q is not a non-negative number", s, k, v)
			}
			return x, nil
		}
		var err error
		switch k {
		case "bundle":
			if !strings.Contains(v, "@") {
				return Fault{}, fmt.Errorf("fault %q: bundle must be NAME@VERSION", s)
			}
			f.Bundle = v
		case "errors":
			f.Errors, err = num()
		case "latency":
			f.Latency, err = num()
		case "output-shift":
			f.Shift, err = num()
		case "offline":
			f.Offline, err = num()
		case "fraction":
			f.Fraction, err = num()
		case "group":
			f.Group = v
		case "install":
			if v != "fail" && v != "smoke-fail" {
				return Fault{}, fmt.Errorf("fault %q: install must be fail or smoke-fail", s)
			}
			f.Install = v
		default:
			return Fault{}, fmt.Errorf("fault %q: unknown key %q", s, k)
		}
		if err != nil {
			return Fault{}, err
		}
	}
	if f.Errors > 1 || f.Fraction > 1 || f.Offline > 1 {
		return Fault{}, fmt.Errorf("fault %q: rates and fractions are at most 1", s)
	}
	return f, nil
}

// ErrorRate returns the injected inference error rate of a model version.
func ErrorRate(faults []Fault) func(name, version string) float64 {
	return func(name, version string) float64 {
		rate := 0.0
		for _, f := range faults {
			if matches(f, name, version) {
				rate = max(rate, f.Errors)
			}
		}
		return rate
	}
}

func matches(f Fault, name, version string) bool {
	return f.Bundle == "" || f.Bundle == name+"@"+version
}

// InstallFault returns the install fault ("fail", "smoke-fail" or "") of a model version.
func InstallFault(faults []Fault) func(name, version string) string {
	return func(name, version string) string {
		for _, f := range faults {
			if f.Install != "" && matches(f, name, version) {
				return f.Install
			}
		}
		return ""
	}
}

// LatencyFactor returns the multiplier applied to a model version's measured latency (1: none).
func LatencyFactor(faults []Fault) func(name, version string) float64 {
	return func(name, version string) float64 {
		m := 1.0
		for _, f := range faults {
			if f.Latency > 0 && matches(f, name, version) {
				m = max(m, f.Latency)
			}
		}
		return m
	}
}

// OutputShift returns the shift added to a model version's outputs in its telemetry.
func OutputShift(faults []Fault) func(name, version string) float64 {
	return func(name, version string) float64 {
		s := 0.0
		for _, f := range faults {
			if f.Shift != 0 && matches(f, name, version) {
				s = f.Shift
			}
		}
		return s
	}
}
