package cli

import (
	"flag"
	"testing"
)

func TestEnvFillsFlagsNotGiven(t *testing.T) {
	t.Setenv("EDGEFLEET_MQTT_LISTEN", "127.0.0.1:9999")
	t.Setenv("EDGEFLEET_DATA", "/from/env")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	listen := fs.String("mqtt-listen", "127.0.0.1:1883", "")
	data := fs.String("data", "", "")
	if err := Parse(fs, []string{"--data", "/from/flag"}); err != nil {
		t.Fatal(err)
	}
	if *listen != "127.0.0.1:9999" || *data != "/from/flag" {
		t.Fatalf("listen %q data %q", *listen, *data)
	}
}

func TestEnvBadValueIsAnError(t *testing.T) {
	t.Setenv("EDGEFLEET_COUNT", "many")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Int("count", 1, "")
	if err := Parse(fs, nil); err == nil {
		t.Fatal("bad env value accepted")
	}
}

func TestParseLabels(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
		bad  bool
	}{{"a=1,b=2", 2, false}, {"", 0, false}, {"a", 0, true}, {"=x", 0, true}, {"arch=arm64, site=berlin ", 2, false}} {
		m, err := ParseLabels(c.in)
		if (err != nil) != c.bad || (!c.bad && len(m) != c.want) {
			t.Errorf("%q: %v %v", c.in, m, err)
		}
	}
}
