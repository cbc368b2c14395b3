package deploy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strings"
)

// ErrEmptyTarget is returned by Plan (and New) when no device matches the target.
var ErrEmptyTarget = errors.New("rollout target matches no device")

// DeviceInfo is what the registry knows of a device when a rollout is planned.
type DeviceInfo struct {
	ID     string            `json:"id"`
	Group  string            `json:"group"`
	Labels map[string]string `json:"labels,omitempty"`
	Arch   string            `json:"arch,omitempty"`
	Online bool              `json:"online"`
	// CurrentBundle is the bundle the device runs for the rollout's model ("" when none).
	CurrentBundle string `json:"current_bundle,omitempty"`
}

// PlannedDevice is one device of the target in assignment order.
type PlannedDevice struct {
	ID       string `json:"id"`
	Group    string `json:"group"`
	Arch     string `json:"arch,omitempty"`
	Stage    int    `json:"stage"`              // the first stage that includes it
	Previous string `json:"previous,omitempty"` // its bundle when planned
}

// StagePlan is the deterministic stage membership of a rollout.
type StagePlan struct {
	// Devices in assignment order; stage i is Devices[:Sizes[i]].
	Devices []PlannedDevice `json:"devices"`
	// Sizes are cumulative and non-decreasing; the last is len(Devices).
	Sizes []int `json:"sizes"`
}

// Members returns the devices in stage i (cumulative).
func (p StagePlan) Members(i int) []PlannedDevice { return p.Devices[:p.Sizes[i]] }

// Plan decides which devices each stage includes, reproducibly from seed:
//   - target: devices in spec.Target.Groups (any group when empty) that match the selector, whose
//     labels are completed with "group" and "arch" from the registry fields;
//   - stage sizes: a count (capped at the target) or a percentage of the target rounded up, never
//     smaller than the stage before;
//   - order: devices are stratified by (group, arch) and drawn round-robin over strata, so that even
//     a 5-device canary spans as many groups and architectures as it can. Strata and the devices in
//     each are ordered by a hash of the seed and their name, online devices first within a
//     stratum (a canary that is offline tells nothing).
//
// The same spec, device list and seed give the same plan whatever the order of devices.
func Plan(spec Spec, devices []DeviceInfo, seed int64) (StagePlan, error) {
	sel, err := ParseSelector(spec.Target.Selector)
	if err != nil {
		return StagePlan{}, fmt.Errorf("%w: target.selector: %w", ErrInvalidSpec, err)
	}
	type stratum struct {
		key  string
		hash uint64
		devs []DeviceInfo
	}
	strata := map[string]*stratum{}
	seen := map[string]bool{}
	n := 0
	for _, d := range devices {
		if seen[d.ID] || !inTarget(spec.Target, sel, d) {
			continue
		}
		seen[d.ID] = true
		key := d.Group + "\x00" + d.Arch
		s := strata[key]
		if s == nil {
			s = &stratum{key: key, hash: seededHash(seed, "stratum\x00"+key)}
			strata[key] = s
		}
		s.devs = append(s.devs, d)
		n++
	}
	if n == 0 {
		return StagePlan{}, fmt.Errorf("plan %s for %v %q: %w", spec.Bundle, spec.Target.Groups, spec.Target.Selector, ErrEmptyTarget)
	}
	ordered := make([]*stratum, 0, len(strata))
	for _, s := range strata {
		hs := make(map[string]uint64, len(s.devs))
		for _, d := range s.devs {
			hs[d.ID] = seededHash(seed, "device\x00"+d.ID)
		}
		slices.SortFunc(s.devs, func(a, b DeviceInfo) int {
			if a.Online != b.Online {
				if a.Online {
					return -1
				}
				return 1
			}
			if c := cmpU64(hs[a.ID], hs[b.ID]); c != 0 {
				return c
			}
			return strings.Compare(a.ID, b.ID)
		})
		ordered = append(ordered, s)
	}
	slices.SortFunc(ordered, func(a, b *stratum) int {
		if c := cmpU64(a.hash, b.hash); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})

	sizes := StageSizes(spec.Stages, n)
	p := StagePlan{Devices: make([]PlannedDevice, 0, n), Sizes: sizes}
	for round := 0; len(p.Devices) < n; round++ {
		for _, s := range ordered {
			if round < len(s.devs) {
				d := s.devs[round]
				p.Devices = append(p.Devices, PlannedDevice{ID: d.ID, Group: d.Group, Arch: d.Arch, Previous: d.CurrentBundle})
			}
		}
	}
	stage := 0
	for i := range p.Devices {
		for i >= sizes[stage] {
			stage++
		}
		p.Devices[i].Stage = stage
	}
	return p, nil
}

// StageSizes turns stages into cumulative device counts for a target of n devices: a percentage is
// rounded up (1% of 10 devices is 1 device, never 0), a count is capped at n, and no stage is
// smaller than the one before.
func StageSizes(stages []Stage, n int) []int {
	sizes := make([]int, len(stages))
	prev := 0
	for i, st := range stages {
		var k int
		if st.Percent > 0 {
			// The epsilon keeps 10% of 30 (= 3.0000000000000004 in floating point) at 3.
			k = int(math.Ceil(st.Percent*float64(n)/100 - 1e-9))
		} else {
			k = st.Devices
		}
		k = min(max(k, prev), n)
		sizes[i] = k
		prev = k
	}
	return sizes
}

func inTarget(t Target, sel Selector, d DeviceInfo) bool {
	if len(t.Groups) > 0 && !slices.Contains(t.Groups, d.Group) {
		return false
	}
	if sel.Empty() {
		return true
	}
	labels := make(map[string]string, len(d.Labels)+2)
	if d.Group != "" {
		labels["group"] = d.Group
	}
	if d.Arch != "" {
		labels["arch"] = d.Arch
	}
	for k, v := range d.Labels {
		labels[k] = v
	}
	return sel.Matches(labels)
}

// seededHash is FNV-1a over the seed and s, finished with the splitmix64 mixer so that ids that
// differ in one character still land far apart.
func seededHash(seed int64, s string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(seed))
	h.Write(b[:])
	h.Write([]byte(s))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
