package deploy

import "testing"

func TestSelector(t *testing.T) {
	dev := map[string]string{"arch": "arm64", "site": "x", "tier": "gold"}
	for _, c := range []struct {
		sel   string
		match bool
	}{
		{"", true},
		{"arch=arm64", true},
		{"arch==arm64", true},
		{"arch=amd64", false},
		{"arch=arm64,site!=x", false},
		{"arch=arm64,site!=y", true},
		{"missing!=y", true},
		{"tier in (gold, silver)", true},
		{"tier notin (gold)", false},
		{"arch in (amd64,riscv64), tier=gold", false},
		{"tier", true},
		{"!tier", false},
		{"!gpu", true},
		{" arch = arm64 , tier ", true},
	} {
		s, err := ParseSelector(c.sel)
		if err != nil {
			t.Errorf("%q: %v", c.sel, err)
			continue
		}
		if got := s.Matches(dev); got != c.match {
			t.Errorf("%q matches = %v, want %v", c.sel, got, c.match)
		}
	}
	for _, bad := range []string{"arch=", "=x", "a,,b", "tier in (a", "tier in a)", "tier between (a)", "a=b=c", "x in ((a))", "!"} {
		if _, err := ParseSelector(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
