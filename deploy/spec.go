package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors callers decide on (the API maps ErrInvalidSpec to 422 and ErrState to 409).
var (
	// ErrInvalidSpec wraps every validation failure of a Spec; the message names the field.
	ErrInvalidSpec = errors.New("invalid rollout spec")
	// ErrState is returned by an operator verb that the rollout's current state does not allow.
	ErrState = errors.New("illegal rollout state transition")
)

// Spec is a rollout as an operator creates it (INTERFACE.md, POST /api/v1/rollouts).
type Spec struct {
	Bundle string `json:"bundle"`
	// Model is the model name the bundle serves (the key of group baselines). When empty it is
	// taken from Bundle's "name@version" form; the control plane fills it when Bundle is an id.
	Model     string  `json:"model,omitempty"`
	Target    Target  `json:"target"`
	Stages    []Stage `json:"stages"`
	Gates     Gates   `json:"gates,omitzero"`
	Rate      Rate    `json:"rate,omitzero"`
	OnFailure string  `json:"on_failure,omitempty"`
	// Seed makes the plan reproducible; 0 means "derive one from the rollout id" (New stores it).
	Seed int64 `json:"seed,omitempty"`
}

// Target is the set of devices a rollout may touch: the union of Groups (all groups when empty)
// intersected with Selector.
type Target struct {
	Groups   []string `json:"groups,omitempty"`
	Selector string   `json:"selector,omitempty"`
}

// Stage is one wave. Exactly one of Devices and Percent is set; both are cumulative (the stage's
// total, not its increment) so that "1 device, 5%, 25%, 100%" reads as written.
type Stage struct {
	Devices  int      `json:"devices,omitempty"`
	Percent  float64  `json:"percent,omitempty"`
	Bake     Duration `json:"bake,omitempty"`
	Approval bool     `json:"approval,omitempty"`
	Gates    *Gates   `json:"gates,omitempty"`
}

// Rate bounds the pace of assignments; zero fields mean unlimited.
type Rate struct {
	DevicesPerMinute float64 `json:"devices_per_minute,omitempty"`
	MaxInFlight      int     `json:"max_in_flight,omitempty"`
}

// What a failed gate does (Spec.OnFailure); the default is OnFailureRollback.
const (
	OnFailureRollback = "rollback"
	OnFailurePause    = "pause"
)

// Duration is a time.Duration that reads and writes JSON as a Go duration string ("30s", "5m").
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string; a bare number is taken as seconds because that is what
// a human typing JSON by hand means.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if err2 := json.Unmarshal(b, &secs); err2 != nil {
			return fmt.Errorf("duration: want a string like \"30s\": %w", err)
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	if s == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// ModelName is the model the rollout changes: Spec.Model, or the name part of "name@version".
func (s Spec) ModelName() string {
	if s.Model != "" {
		return s.Model
	}
	if name, _, ok := strings.Cut(s.Bundle, "@"); ok {
		return name
	}
	return s.Bundle
}

func (s Spec) onFailure() string {
	if s.OnFailure == "" {
		return OnFailureRollback
	}
	return s.OnFailure
}

// StageGates returns the gates in force for stage i: the stage's own fields over the rollout's,
// over the defaults.
func (s Spec) StageGates(i int) Gates {
	g := s.Gates
	if i >= 0 && i < len(s.Stages) && s.Stages[i].Gates != nil {
		g = g.Merge(*s.Stages[i].Gates)
	}
	return g
}

// Validate checks a spec before anything is planned. Every error wraps ErrInvalidSpec and names
// the field at fault. Rules beyond the obvious:
//   - the last stage must be "percent: 100": a rollout that completes sets the groups' baseline,
//     which would move the rest of the target anyway, bypassing the stages;
//   - percentages are strictly increasing, and so are device counts (mixing the two is allowed;
//     Plan then never lets a stage shrink below the one before);
//   - a target needs groups or a selector, so that "everything" is never an accident.
func (s Spec) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidSpec, field, fmt.Sprintf(format, args...))
	}
	if strings.TrimSpace(s.Bundle) == "" {
		return bad("bundle", "required")
	}
	if len(s.Target.Groups) == 0 && strings.TrimSpace(s.Target.Selector) == "" {
		return bad("target", "needs groups or a selector")
	}
	for i, g := range s.Target.Groups {
		if strings.TrimSpace(g) == "" {
			return bad(fmt.Sprintf("target.groups[%d]", i), "empty group name")
		}
	}
	if _, err := ParseSelector(s.Target.Selector); err != nil {
		return fmt.Errorf("%w: target.selector: %w", ErrInvalidSpec, err)
	}
	if len(s.Stages) == 0 {
		return bad("stages", "at least one stage is required")
	}
	lastPct, lastDev := 0.0, 0
	for i, st := range s.Stages {
		f := fmt.Sprintf("stages[%d]", i)
		switch {
		case st.Devices != 0 && st.Percent != 0:
			return bad(f, "set devices or percent, not both")
		case st.Devices == 0 && st.Percent == 0:
			return bad(f, "needs devices or percent")
		case st.Devices < 0:
			return bad(f+".devices", "%d is negative", st.Devices)
		case st.Percent < 0 || st.Percent > 100:
			return bad(f+".percent", "%v is outside (0, 100]", st.Percent)
		}
		if st.Percent != 0 {
			if st.Percent <= lastPct {
				return bad(f+".percent", "%v does not exceed the previous stage's %v (percentages are cumulative)", st.Percent, lastPct)
			}
			lastPct = st.Percent
		}
		if st.Devices != 0 {
			if st.Devices <= lastDev {
				return bad(f+".devices", "%d does not exceed the previous stage's %d (counts are cumulative)", st.Devices, lastDev)
			}
			lastDev = st.Devices
		}
		if st.Bake < 0 {
			return bad(f+".bake", "%v is negative", st.Bake.D())
		}
		if st.Gates != nil {
			if err := st.Gates.validate(f + ".gates"); err != nil {
				return err
			}
		}
	}
	if last := s.Stages[len(s.Stages)-1]; last.Percent != 100 {
		return bad(fmt.Sprintf("stages[%d]", len(s.Stages)-1), "the last stage must be percent: 100")
	}
	if err := s.Gates.validate("gates"); err != nil {
		return err
	}
	if s.Rate.DevicesPerMinute < 0 {
		return bad("rate.devices_per_minute", "%v is negative", s.Rate.DevicesPerMinute)
	}
	if s.Rate.MaxInFlight < 0 {
		return bad("rate.max_in_flight", "%d is negative", s.Rate.MaxInFlight)
	}
	switch s.OnFailure {
	case "", OnFailureRollback, OnFailurePause:
	default:
		return bad("on_failure", "%q is neither %q nor %q", s.OnFailure, OnFailureRollback, OnFailurePause)
	}
	return nil
}
