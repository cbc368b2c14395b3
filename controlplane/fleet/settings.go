package fleet

import (
	"fmt"
	"time"
)

// CapturePolicy says whether devices of a group may capture input samples for retraining, how
// long captured samples are kept, and how many one capture may take. The zero value is off:
// camera images from shops and factories can hold personal data.
type CapturePolicy struct {
	Enabled    bool   `json:"enabled"`
	Retention  string `json:"retention,omitempty"` // a Go duration, e.g. "720h"
	MaxSamples int    `json:"max_samples,omitempty"`
}

// Limits on a capture policy: a retention beyond a year or captures of more than 100,000 samples
// are far more likely typing mistakes than intentions.
const (
	MaxCaptureRetention = 366 * 24 * time.Hour
	MaxCaptureSamples   = 100_000
	// DefaultCaptureRetention applies when a policy enables capture without a retention.
	DefaultCaptureRetention = 30 * 24 * time.Hour
	// DefaultCaptureSamples applies when a policy enables capture without a sample limit.
	DefaultCaptureSamples = 1000
)

// Check validates the policy and fills in defaults for an enabled one.
func (p *CapturePolicy) Check() error {
	if p.MaxSamples < 0 || p.MaxSamples > MaxCaptureSamples {
		return fmt.Errorf("capture.max_samples must be between 1 and %d, got %d", MaxCaptureSamples, p.MaxSamples)
	}
	if p.Retention != "" {
		d, err := time.ParseDuration(p.Retention)
		if err != nil || d <= 0 || d > MaxCaptureRetention {
			return fmt.Errorf("capture.retention must be a duration like 720h, above 0 and at most %s, got %q", MaxCaptureRetention, p.Retention)
		}
	}
	if !p.Enabled {
		return nil
	}
	if p.Retention == "" {
		p.Retention = DefaultCaptureRetention.String()
	}
	if p.MaxSamples == 0 {
		p.MaxSamples = DefaultCaptureSamples
	}
	return nil
}

// RetentionDuration is the policy's retention (the default when unset).
func (p CapturePolicy) RetentionDuration() time.Duration {
	if d, err := time.ParseDuration(p.Retention); err == nil && d > 0 {
		return d
	}
	return DefaultCaptureRetention
}

// GroupPatch changes a group's settings; nil fields stay as they are.
type GroupPatch struct {
	Production *bool          `json:"production"`
	Capture    *CapturePolicy `json:"capture"`
}
