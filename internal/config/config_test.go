package config

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/internal/cli"
)

// settings is a flag set shaped like the binaries' (a string, a comma list, repeatable flags, a
// duration, numbers, a boolean and secrets).
type settings struct {
	fs                              *flag.FlagSet
	data, broker, labels, pass, tok *string
	tlsKey                          *string
	trust                           *cli.Strings
	faults                          *cli.List
	interval                        *time.Duration
	bandwidth                       *int
	rate                            *float64
	debug                           *bool
}

func newSettings() *settings {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	s := &settings{fs: fs, trust: &cli.Strings{}, faults: &cli.List{}}
	s.data = fs.String("data", "./var", "")
	s.broker = fs.String("broker", "mqtt://127.0.0.1:1883", "")
	s.labels = fs.String("labels", "", "")
	s.pass = fs.String("broker-password", "", "")
	s.tok = fs.String("admin-token", "", "")
	s.tlsKey = fs.String("tls-key", "", "")
	fs.Var(s.trust, "trust", "")
	fs.Var(s.faults, "fault", "")
	s.interval = fs.Duration("telemetry-interval", time.Minute, "")
	s.bandwidth = fs.Int("bundle-bandwidth", 8<<20, "")
	s.rate = fs.Float64("drain-rate", 20, "")
	s.debug = fs.Bool("debug", false, "")
	return s
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "edgefleet.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

const fullFile = `
data: /var/lib/edgefleet
broker: [mqtts://a.example:8883, mqtts://b.example:8883]
trust: [release-2024.pub, release-2025.pub]
labels: {site: plant-3, arch: arm64}
fault:
  - bundle=wake@1.1.0,errors=0.5
telemetry-interval: 30s
bundle-bandwidth: 1048576
drain-rate: 2.5
debug: true
broker-password: from-file
tls-key:
`

func TestPrecedence(t *testing.T) {
	file := writeFile(t, fullFile)
	other := writeFile(t, "data: /srv/other\n")
	type want struct {
		data, broker, labels, pass string
		trust                      []string
		faults                     []string
		interval                   time.Duration
		bandwidth                  int
		rate                       float64
		debug                      bool
		src                        map[string]Source
	}
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want want
	}{
		{name: "defaults", want: want{data: "./var", broker: "mqtt://127.0.0.1:1883", interval: time.Minute, bandwidth: 8 << 20, rate: 20,
			src: map[string]Source{"data": FromDefault, "trust": FromDefault}}},
		{name: "file", args: []string{"--config", file}, want: want{data: "/var/lib/edgefleet", broker: "mqtts://a.example:8883,mqtts://b.example:8883",
			labels: "site=plant-3,arch=arm64", pass: "from-file", trust: []string{"release-2024.pub", "release-2025.pub"},
			faults: []string{"bundle=wake@1.1.0,errors=0.5"}, interval: 30 * time.Second, bandwidth: 1 << 20, rate: 2.5, debug: true,
			src: map[string]Source{"data": FromFile, "trust": FromFile, "tls-key": FromDefault}}},
		{name: "file named by EDGEFLEET_CONFIG", env: map[string]string{"EDGEFLEET_CONFIG": file},
			want: want{data: "/var/lib/edgefleet", broker: "mqtts://a.example:8883,mqtts://b.example:8883", labels: "site=plant-3,arch=arm64",
				pass: "from-file", trust: []string{"release-2024.pub", "release-2025.pub"}, faults: []string{"bundle=wake@1.1.0,errors=0.5"},
				interval: 30 * time.Second, bandwidth: 1 << 20, rate: 2.5, debug: true, src: map[string]Source{"config": FromEnv, "data": FromFile}}},
		{name: "--config beats EDGEFLEET_CONFIG", args: []string{"--config", other}, env: map[string]string{"EDGEFLEET_CONFIG": file},
			want: want{data: "/srv/other", broker: "mqtt://127.0.0.1:1883", interval: time.Minute, bandwidth: 8 << 20, rate: 20,
				src: map[string]Source{"config": FromFlag, "data": FromFile, "trust": FromDefault}}},
		{name: "environment beats file", args: []string{"--config", file},
			env: map[string]string{"EDGEFLEET_DATA": "/env/data", "EDGEFLEET_TRUST": "env.pub", "EDGEFLEET_BROKER_PASSWORD": "from-env", "EDGEFLEET_DEBUG": "false"},
			want: want{data: "/env/data", broker: "mqtts://a.example:8883,mqtts://b.example:8883", labels: "site=plant-3,arch=arm64",
				pass: "from-env", trust: []string{"env.pub"}, faults: []string{"bundle=wake@1.1.0,errors=0.5"},
				interval: 30 * time.Second, bandwidth: 1 << 20, rate: 2.5, src: map[string]Source{"data": FromEnv, "trust": FromEnv, "broker": FromFile}}},
		{name: "flags beat environment and file", args: []string{"--config", file, "--data", "/flag/data", "--trust", "flag.pub", "--broker-password", "from-flag", "--telemetry-interval", "5s"},
			env: map[string]string{"EDGEFLEET_DATA": "/env/data", "EDGEFLEET_TRUST": "env.pub"},
			want: want{data: "/flag/data", broker: "mqtts://a.example:8883,mqtts://b.example:8883", labels: "site=plant-3,arch=arm64",
				pass: "from-flag", trust: []string{"flag.pub"}, faults: []string{"bundle=wake@1.1.0,errors=0.5"},
				interval: 5 * time.Second, bandwidth: 1 << 20, rate: 2.5, debug: true,
				src: map[string]Source{"data": FromFlag, "trust": FromFlag, "broker-password": FromFlag, "labels": FromFile}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSettings()
			res, err := load(s.fs, c.args, envOf(c.env))
			if err != nil {
				t.Fatal(err)
			}
			got := want{data: *s.data, broker: *s.broker, labels: *s.labels, pass: *s.pass, trust: nilIfEmpty(*s.trust), faults: nilIfEmpty(*s.faults),
				interval: *s.interval, bandwidth: *s.bandwidth, rate: *s.rate, debug: *s.debug, src: c.want.src}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got  %+v\nwant %+v", got, c.want)
			}
			for name, src := range c.want.src {
				if res.Sources[name] != src {
					t.Errorf("source of %s: %s, want %s", name, res.Sources[name], src)
				}
			}
		})
	}
}

func TestFileErrors(t *testing.T) {
	cases := []struct {
		name, body string
		wants      []string
	}{
		{"unknown key with suggestion", "data: /x\nbrokr: mqtt://h:1883\n", []string{`line 2`, `unknown key "brokr"`, `did you mean "broker"`}},
		{"unknown key far from any flag", "\n\nhttp_proxy: x\n", []string{`line 3`, `unknown key "http_proxy"`, "flag names"}},
		{"repeated key", "data: /a\ndata: /b\n", []string{"line 2", `"data" is already set on line 1`}},
		{"config inside config", "config: other.yaml\n", []string{"line 1", `"config" cannot be set`}},
		{"bad number", "\nbundle-bandwidth: lots\n", []string{"line 2", "bundle-bandwidth", `"lots"`}},
		{"bad duration", "telemetry-interval: 5 minutes\n", []string{"line 1", "telemetry-interval"}},
		{"not a mapping", "- data\n- broker\n", []string{"line 1", "want a mapping"}},
		{"nested list", "trust: [[a.pub]]\n", []string{"line 1", "trust", "plain values"}},
		{"not YAML", "data: [unclosed\n", []string{"edgefleet.yaml"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			file := writeFile(t, c.body)
			_, err := load(newSettings().fs, []string{"--config", file}, envOf(nil))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range append(c.wants, file) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	if _, err := load(newSettings().fs, []string{"--config", "/nonexistent/edgefleet.yaml"}, envOf(nil)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	// An empty file and keys with no value are fine: they leave the defaults.
	s := newSettings()
	if _, err := load(s.fs, []string{"--config", writeFile(t, "# nothing yet\n")}, envOf(nil)); err != nil || *s.data != "./var" {
		t.Errorf("empty file: %v, data %q", err, *s.data)
	}
	if _, err := load(s.fs, []string{"--config", writeFile(t, "data:\n")}, envOf(nil)); err != nil || *s.data != "./var" {
		t.Errorf("null value: %v, data %q", err, *s.data)
	}
}

func TestIsSecret(t *testing.T) {
	for name, want := range map[string]bool{
		"broker-password": true, "admin-token": true, "token": true, "retrain-secret": true, "enroll": true,
		"tls-key": false, "control-key": false, "tls-cert": false, "data": false, "broker": false, "trust": false,
	} {
		if IsSecret(name) != want {
			t.Errorf("IsSecret(%q) = %v", name, !want)
		}
	}
}

func TestPrintRedactsAndRoundTrips(t *testing.T) {
	file := writeFile(t, fullFile+"admin-token: tok-from-file-123\n")
	s := newSettings()
	args := []string{"--config", file, "--broker-password", "hunter2", "--broker", "mqtts://dev:pw-in-url@a.example:8883,mqtt://b.example:1883"}
	res, err := load(s.fs, args, envOf(map[string]string{"EDGEFLEET_DATA": "/env/data"}))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Print(&out, s.fs, res); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	t.Logf("\n%s", text)
	for _, secret := range []string{"hunter2", "tok-from-file-123", "pw-in-url", "from-file"} {
		if strings.Contains(text, secret) {
			t.Errorf("secret %q printed", secret)
		}
	}
	for _, w := range []string{
		"broker-password: " + Redacted + " # flag",
		"admin-token: " + Redacted + " # file",
		"# config file: " + file,
		"mqtts://dev:" + Redacted + "@a.example:8883,mqtt://b.example:1883",
		"data: /env/data # env EDGEFLEET_DATA",
		"trust: [release-2024.pub, release-2025.pub] # file",
		"telemetry-interval: 30s",
		"bundle-bandwidth: 1048576",
		"drain-rate: 2.5",
		"debug: true",
		`tls-key: "" # default`,
	} {
		if !strings.Contains(text, w) {
			t.Errorf("output lacks %q", w)
		}
	}
	if strings.Contains(text, "print-config:") || strings.Contains(text, "\nconfig:") {
		t.Error("--config and --print-config belong on the command line, not in the printed file")
	}

	// The output is a config file: read back, every non-secret setting is the same.
	again := newSettings()
	if _, err := load(again.fs, []string{"--config", writeFile(t, text)}, envOf(nil)); err != nil {
		t.Fatalf("printed settings do not load: %v", err)
	}
	for _, name := range []string{"data", "labels", "trust", "fault", "telemetry-interval", "bundle-bandwidth", "drain-rate", "debug", "tls-key"} {
		if a, b := s.fs.Lookup(name).Value.String(), again.fs.Lookup(name).Value.String(); a != b {
			t.Errorf("%s: printed %q, read back %q", name, a, b)
		}
	}
}

func TestParsePrintConfigExits(t *testing.T) {
	s := newSettings()
	var out bytes.Buffer
	err := Parse(s.fs, []string{"--print-config", "--data", "/d"}, &out)
	if !errors.Is(err, ErrPrinted) || !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want ErrPrinted wrapping flag.ErrHelp (commands exit 0 on it)", err)
	}
	if !strings.Contains(out.String(), "data: /d # flag") {
		t.Errorf("output:\n%s", out.String())
	}
	s = newSettings()
	if err := Parse(s.fs, []string{"--data", "/d"}, &out); err != nil {
		t.Fatalf("plain parse: %v", err)
	}
}

func nilIfEmpty[S ~[]string](s S) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}
