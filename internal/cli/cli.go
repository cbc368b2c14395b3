// Package cli holds the small pieces both binaries share for their command lines: every flag can
// also come from an EDGEFLEET_... environment variable, repeatable flags, and version stamping.
package cli

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// Version is stamped at build time with -ldflags "-X github.com/edgefleet/edgefleet/internal/cli.Version=...".
var Version = "0.1.0-dev"

// EnvName is the environment variable that backs a flag: --mqtt-listen -> EDGEFLEET_MQTT_LISTEN.
func EnvName(flagName string) string {
	return "EDGEFLEET_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flagName))
}

// Parse parses args, then fills every flag not given on the command line from its environment
// variable. Command-line flags win over the environment.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("environment %s: %w", EnvName(f.Name), e)
			}
		}
	})
	return err
}

// Usage installs a usage function that lists flags with their environment variables.
func Usage(fs *flag.FlagSet, synopsis string) {
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: %s\n\nflags (each also read from the environment variable shown):\n", synopsis)
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" && f.DefValue != "[]" {
				def = " (default " + f.DefValue + ")"
			}
			fmt.Fprintf(w, "  --%s  [%s]\n      %s%s\n", f.Name, EnvName(f.Name), f.Usage, def)
		})
	}
}

// Strings is a repeatable string flag.
type Strings []string

func (s *Strings) String() string { return strings.Join(*s, ",") }

// Set appends; a comma-separated value (as from the environment) adds several.
func (s *Strings) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}

// ParseLabels parses k=v,k2=v2.
func ParseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("label %q: want key=value", kv)
		}
		out[k] = v
	}
	return out, nil
}

// List is a repeatable flag whose values may contain commas (e.g. --fault 'a=1,b=2').
type List []string

func (l *List) String() string { return strings.Join(*l, " ") }

// Set appends one value as given.
func (l *List) Set(v string) error { *l = append(*l, v); return nil }
