package deploy

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
)

func TestStageSizes(t *testing.T) {
	for _, c := range []struct {
		name   string
		stages []Stage
		n      int
		want   []int
	}{
		{"interface example", []Stage{{Devices: 1}, {Percent: 10}, {Percent: 100}}, 95, []int{1, 10, 95}},
		{"percent rounds up", []Stage{{Percent: 1}, {Percent: 5}, {Percent: 25}, {Percent: 100}}, 10, []int{1, 1, 3, 10}},
		{"10% of 30 is 3 not 4", []Stage{{Percent: 10}, {Percent: 100}}, 30, []int{3, 30}},
		{"33.3% of 3", []Stage{{Percent: 33.3}, {Percent: 100}}, 3, []int{1, 3}},
		{"count capped at target", []Stage{{Devices: 50}, {Percent: 100}}, 7, []int{7, 7}},
		{"never shrinks", []Stage{{Devices: 5}, {Percent: 10}, {Percent: 100}}, 20, []int{5, 5, 20}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := StageSizes(c.stages, c.n); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}

func planFleet() []DeviceInfo {
	var out []DeviceInfo
	for _, g := range []struct {
		group string
		n     int
	}{{"big", 60}, {"mid", 25}, {"small", 5}} {
		for i := range g.n {
			arch := "arm64"
			if i%3 == 0 {
				arch = "amd64"
			}
			out = append(out, DeviceInfo{ID: g.group + "-" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Group: g.group,
				Arch: arch, Online: i%7 != 3, Labels: map[string]string{"site": []string{"x", "y"}[i%2]}})
		}
	}
	return out
}

func TestPlanDeterministic(t *testing.T) {
	spec := Spec{Bundle: "b@2", Target: Target{Groups: []string{"big", "mid", "small"}},
		Stages: []Stage{{Devices: 1}, {Percent: 5}, {Percent: 25}, {Percent: 100}}}
	devs := planFleet()
	a, err := Plan(spec, devs, 42)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	shuffled := append([]DeviceInfo(nil), devs...)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	b, err := Plan(spec, shuffled, 42)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatal("plan depends on the order of devices")
	}
	c, _ := Plan(spec, devs, 43)
	if reflect.DeepEqual(a.Devices, c.Devices) {
		t.Fatal("a different seed gives the same order")
	}
	if !reflect.DeepEqual(a.Sizes, []int{1, 5, 23, 90}) {
		t.Fatalf("sizes %v", a.Sizes)
	}
	for i, d := range a.Devices {
		want := 0
		for want < len(a.Sizes) && i >= a.Sizes[want] {
			want++
		}
		if d.Stage != want {
			t.Fatalf("device %d in stage %d, want %d", i, d.Stage, want)
		}
	}
}

func TestPlanStratified(t *testing.T) {
	spec := Spec{Bundle: "b@2", Target: Target{Groups: []string{"big", "mid", "small"}},
		Stages: []Stage{{Devices: 6}, {Percent: 100}}}
	for seed := range int64(20) {
		p, err := Plan(spec, planFleet(), seed)
		if err != nil {
			t.Fatal(err)
		}
		// 3 groups x 2 archs = 6 strata: the first 6 devices cover every one of them, even though
		// "small" holds 5 of 90 devices.
		strata := map[[2]string]bool{}
		for _, d := range p.Members(0) {
			strata[[2]string{d.Group, d.Arch}] = true
		}
		if len(strata) != 6 {
			t.Fatalf("seed %d: canary covers %d strata: %v", seed, len(strata), p.Members(0))
		}
	}
}

func TestPlanOnlineFirst(t *testing.T) {
	spec := Spec{Bundle: "b@2", Target: Target{Groups: []string{"big", "mid", "small"}},
		Stages: []Stage{{Devices: 6}, {Percent: 100}}}
	devs := planFleet()
	online := map[string]bool{}
	for _, d := range devs {
		online[d.ID] = d.Online
	}
	p, _ := Plan(spec, devs, 5)
	for _, d := range p.Members(0) {
		if !online[d.ID] {
			t.Fatalf("offline %s in the canary", d.ID)
		}
	}
}

func TestPlanTarget(t *testing.T) {
	devs := planFleet()
	for _, c := range []struct {
		name   string
		target Target
		want   int
	}{
		{"one group", Target{Groups: []string{"mid"}}, 25},
		{"group and selector", Target{Groups: []string{"big", "small"}, Selector: "arch=amd64,site!=y"}, 10 + 1},
		{"selector on group label", Target{Selector: "group in (small)"}, 5},
		{"selector only", Target{Selector: "arch=amd64"}, 20 + 9 + 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := Plan(Spec{Bundle: "b", Target: c.target, Stages: []Stage{{Percent: 100}}}, devs, 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Devices) != c.want {
				t.Fatalf("%d devices, want %d", len(p.Devices), c.want)
			}
		})
	}
	_, err := Plan(Spec{Bundle: "b", Target: Target{Groups: []string{"none"}}, Stages: []Stage{{Percent: 100}}}, devs, 1)
	if !errors.Is(err, ErrEmptyTarget) {
		t.Fatalf("empty target: %v", err)
	}
}
