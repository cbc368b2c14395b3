// Package config adds a YAML configuration file and --print-config to a command's flag.FlagSet.
//
// The file's keys are the flag names, so a setting is spelt the same way on the command line, in
// the environment (EDGEFLEET_<FLAG>) and in the file:
//
//	data: /var/lib/edgefleet
//	broker: mqtts://broker.example:8883
//	trust: [release-2024.pub, release-2025.pub]
//
// Precedence, lowest first: the flag's default, the file, the environment, the command line.
// Each flag takes its value from one source only: a repeatable flag set on the command line does
// not also collect the file's entries, because merging lists from several places makes "which
// keys does this device trust" hard to answer.
package config

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgefleet/edgefleet/internal/cli"
)

// Names of the flags this package adds.
const (
	FlagConfig      = "config"
	FlagPrintConfig = "print-config"
)

// ErrPrinted is returned by Parse after --print-config wrote the settings. It wraps flag.ErrHelp
// so that commands which already exit 0 on --help exit 0 here too, without a new case.
var ErrPrinted = fmt.Errorf("effective configuration printed: %w", flag.ErrHelp)

// Source says where a flag's effective value came from.
type Source string

// Sources, lowest precedence first.
const (
	FromDefault Source = "default"
	FromFile    Source = "file"
	FromEnv     Source = "env"
	FromFlag    Source = "flag"
)

// Result is what Load established.
type Result struct {
	// File is the configuration file read ("" when none).
	File string
	// Sources maps every flag name to where its value came from.
	Sources map[string]Source
	// PrintConfig is the value of --print-config.
	PrintConfig bool
}

// Parse is cli.Parse with a configuration file: it adds --config and --print-config to fs (when
// fs lacks them), loads the settings, and with --print-config writes them to stdout and returns
// ErrPrinted.
func Parse(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	res, err := Load(fs, args)
	if err != nil {
		return err
	}
	if res.PrintConfig {
		if err := Print(stdout, fs, res); err != nil {
			return fmt.Errorf("print configuration: %w", err)
		}
		return ErrPrinted
	}
	return nil
}

// Load parses args into fs, then fills each flag the command line did not set from its
// EDGEFLEET_ environment variable, and each flag still unset from the configuration file named
// by --config (or EDGEFLEET_CONFIG).
func Load(fs *flag.FlagSet, args []string) (*Result, error) {
	return load(fs, args, os.LookupEnv)
}

func load(fs *flag.FlagSet, args []string, lookupEnv func(string) (string, bool)) (*Result, error) {
	if fs.Lookup(FlagConfig) == nil {
		fs.String(FlagConfig, "", "YAML file of settings keyed by flag name; flags and EDGEFLEET_ variables override it")
	}
	if fs.Lookup(FlagPrintConfig) == nil {
		fs.Bool(FlagPrintConfig, false, "print the effective settings as YAML (secrets redacted) and exit")
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	res := &Result{Sources: map[string]Source{}}
	fs.VisitAll(func(f *flag.Flag) { res.Sources[f.Name] = FromDefault })
	fs.Visit(func(f *flag.Flag) { res.Sources[f.Name] = FromFlag })

	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || res.Sources[f.Name] != FromDefault {
			return
		}
		if v, ok := lookupEnv(cli.EnvName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("environment %s: %w", cli.EnvName(f.Name), e)
				return
			}
			res.Sources[f.Name] = FromEnv
		}
	})
	if err != nil {
		return nil, err
	}

	res.File = fs.Lookup(FlagConfig).Value.String()
	if res.File != "" {
		if err := applyFile(fs, res); err != nil {
			return nil, err
		}
	}
	res.PrintConfig, _ = strconv.ParseBool(fs.Lookup(FlagPrintConfig).Value.String())
	return res, nil
}

// applyFile sets every flag still at its default from the file.
func applyFile(fs *flag.FlagSet, res *Result) error {
	b, err := os.ReadFile(res.File)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("config file %s: %w", res.File, err)
	}
	if len(doc.Content) == 0 {
		return nil // empty file: nothing to apply
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("config file %s line %d: want a mapping of flag names to values (data: /var/lib/edgefleet)", res.File, root.Line)
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		at := fmt.Sprintf("config file %s line %d", res.File, k.Line)
		name := k.Value
		if prev, dup := seen[name]; dup {
			return fmt.Errorf("%s: %q is already set on line %d", at, name, prev)
		}
		seen[name] = k.Line
		f := fs.Lookup(name)
		switch {
		case f == nil:
			return fmt.Errorf("%s: unknown key %q%s", at, name, suggest(fs, name))
		case name == FlagConfig || name == FlagPrintConfig:
			return fmt.Errorf("%s: %q cannot be set in a config file", at, name)
		}
		if res.Sources[name] != FromDefault {
			continue // the environment or the command line wins
		}
		vals, err := values(f, v)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", at, name, err)
		}
		if vals == nil {
			continue // "key:" with no value keeps the default
		}
		for _, s := range vals {
			if err := fs.Set(name, s); err != nil {
				return fmt.Errorf("%s: %s: value %q: %w", at, name, s, err)
			}
		}
		res.Sources[name] = FromFile
	}
	return nil
}

// values turns a YAML value into the strings to pass to flag.Value.Set: one per item for a
// repeatable flag (trust: [a.pub, b.pub]); a list for any other flag is joined with commas, which
// is how flags that take several values spell them (broker: [mqtts://a:8883, mqtts://b:8883]); a
// mapping becomes k=v pairs (labels: {site: plant-3}).
func values(f *flag.Flag, n *yaml.Node) ([]string, error) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return nil, nil
		}
		return []string{n.Value}, nil
	case yaml.SequenceNode:
		var items []string
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: list items must be plain values", c.Line)
			}
			items = append(items, c.Value)
		}
		if repeatable(f) {
			return items, nil
		}
		return []string{strings.Join(items, ",")}, nil
	case yaml.MappingNode:
		var pairs []string
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: values of %s must be plain values", v.Line, k.Value)
			}
			pairs = append(pairs, k.Value+"="+v.Value)
		}
		if repeatable(f) {
			return pairs, nil
		}
		return []string{strings.Join(pairs, ",")}, nil
	}
	return nil, fmt.Errorf("unsupported value")
}

// repeatable reports whether Set appends (cli.Strings, cli.List and the like: slice types).
func repeatable(f *flag.Flag) bool {
	t := reflect.TypeOf(f.Value)
	return t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Slice
}

// suggest names the closest flag, for a misspelt key.
func suggest(fs *flag.FlagSet, name string) string {
	best, bestD := "", 3 // more than two edits away is a different word
	fs.VisitAll(func(f *flag.Flag) {
		if d := distance(name, f.Name); d < bestD {
			best, bestD = f.Name, d
		}
	})
	if best == "" {
		return " (keys are the command's flag names; see --help)"
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// secretWords mark flags whose values are credentials. Paths to key files (--tls-key,
// --control-key) are not secrets and stay visible: an operator checking a deployment needs them.
var secretWords = []string{"password", "passwd", "token", "secret", "credential", "enroll", "passphrase"}

// IsSecret reports whether a flag's value must never be printed.
func IsSecret(name string) bool {
	n := strings.ToLower(name)
	for _, w := range secretWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// Redacted stands in for a secret that is set.
const Redacted = "<redacted>"

// Print writes the effective settings of fs as YAML that Load accepts back as a config file:
// every flag except --config and --print-config, with where its value came from as a comment.
// Secrets print as <redacted> when set and "" when not, and a password inside a URL is hidden.
func Print(w io.Writer, fs *flag.FlagSet, res *Result) error {
	m := &yaml.Node{Kind: yaml.MappingNode}
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != FlagConfig && f.Name != FlagPrintConfig {
			names = append(names, f.Name)
		}
	})
	sort.Strings(names)
	for _, name := range names {
		f := fs.Lookup(name)
		src := res.Sources[name]
		comment := string(src)
		switch src {
		case FromEnv:
			comment += " " + cli.EnvName(name)
		}
		k := &yaml.Node{Kind: yaml.ScalarNode, Value: name}
		v := valueNode(f)
		v.LineComment = comment
		m.Content = append(m.Content, k, v)
	}
	var buf bytes.Buffer
	head := "# effective settings (secrets redacted); usable as --config\n"
	if res.File != "" {
		head += "# config file: " + res.File + "\n"
	}
	buf.WriteString(head)
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(m); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// valueNode renders a flag's value with its YAML type (numbers and booleans unquoted, lists as
// lists) so the output reads like a hand-written file.
func valueNode(f *flag.Flag) *yaml.Node {
	// A switch is never a secret, whatever its name (--require-device-credentials).
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); IsSecret(f.Name) && !(ok && b.IsBoolFlag()) {
		s := ""
		if f.Value.String() != "" {
			s = Redacted
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	}
	if repeatable(f) {
		seq := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		rv := reflect.ValueOf(f.Value).Elem()
		for i := 0; i < rv.Len(); i++ {
			seq.Content = append(seq.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: hideURLPassword(fmt.Sprint(rv.Index(i).Interface()))})
		}
		return seq
	}
	var val any = f.Value.String()
	if g, ok := f.Value.(flag.Getter); ok {
		val = g.Get()
	}
	switch x := val.(type) {
	case bool, int, int64, uint, uint64, float64:
		// No tag: the encoder writes the plain scalar, which reads back as the same number.
		return &yaml.Node{Kind: yaml.ScalarNode, Value: fmt.Sprint(x)}
	case time.Duration:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: x.String()}
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: hideURLPassword(f.Value.String())}
}

// hideURLPassword replaces the password of every URL in a comma-separated value
// (mqtts://user:pw@host:8883) so a credential given inline does not leak through --print-config.
func hideURLPassword(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			continue
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "REDACTED")
			parts[i] = strings.Replace(u.String(), "REDACTED", Redacted, 1)
		}
	}
	return strings.Join(parts, ",")
}
