package deploy

import (
	"fmt"
	"slices"
	"strings"
)

// Selector is a parsed label selector in the Kubernetes style:
//
//	arch=arm64,site!=x,tier in (a,b),zone notin (z1),gpu,!legacy
//
// Requirements are ANDed. "k=v" and "k==v" need the label equal; "k!=v" matches a device without
// the label too (as Kubernetes does); "k" and "!k" test presence. The zero Selector matches all.
type Selector struct {
	reqs []requirement
}

type selOp int

const (
	opEq selOp = iota
	opNotEq
	opIn
	opNotIn
	opExists
	opNotExists
)

type requirement struct {
	key    string
	op     selOp
	values []string
}

// ParseSelector parses s; an empty string gives the selector that matches everything.
func ParseSelector(s string) (Selector, error) {
	var sel Selector
	parts, err := splitTop(s)
	if err != nil {
		return Selector{}, err
	}
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			if strings.TrimSpace(s) == "" {
				continue
			}
			return Selector{}, fmt.Errorf("selector %q: empty requirement", s)
		}
		r, err := parseRequirement(p)
		if err != nil {
			return Selector{}, fmt.Errorf("selector %q: %w", s, err)
		}
		sel.reqs = append(sel.reqs, r)
	}
	return sel, nil
}

// splitTop splits on commas outside parentheses.
func splitTop(s string) ([]string, error) {
	var parts []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '(':
			depth++
			if depth > 1 {
				return nil, fmt.Errorf("selector %q: nested parentheses", s)
			}
		case ')':
			depth--
			if depth < 0 {
				return nil, fmt.Errorf("selector %q: unbalanced parentheses", s)
			}
		case ',':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("selector %q: unbalanced parentheses", s)
	}
	return append(parts, s[start:]), nil
}

func parseRequirement(p string) (requirement, error) {
	if strings.HasPrefix(p, "!") {
		k := strings.TrimSpace(p[1:])
		if err := checkKey(k); err != nil {
			return requirement{}, err
		}
		return requirement{key: k, op: opNotExists}, nil
	}
	if i := strings.Index(p, "!="); i >= 0 {
		return binaryReq(p[:i], p[i+2:], opNotEq)
	}
	if i := strings.Index(p, "=="); i >= 0 {
		return binaryReq(p[:i], p[i+2:], opEq)
	}
	if i := strings.Index(p, "="); i >= 0 {
		return binaryReq(p[:i], p[i+1:], opEq)
	}
	if open := strings.Index(p, "("); open >= 0 {
		if !strings.HasSuffix(p, ")") {
			return requirement{}, fmt.Errorf("%q: set must end with ')'", p)
		}
		fields := strings.Fields(p[:open])
		if len(fields) != 2 {
			return requirement{}, fmt.Errorf("%q: want 'key in (a,b)' or 'key notin (a,b)'", p)
		}
		var op selOp
		switch fields[1] {
		case "in":
			op = opIn
		case "notin":
			op = opNotIn
		default:
			return requirement{}, fmt.Errorf("%q: unknown operator %q", p, fields[1])
		}
		if err := checkKey(fields[0]); err != nil {
			return requirement{}, err
		}
		var vals []string
		for v := range strings.SplitSeq(p[open+1:len(p)-1], ",") {
			v = strings.TrimSpace(v)
			if err := checkValue(v); err != nil {
				return requirement{}, err
			}
			vals = append(vals, v)
		}
		return requirement{key: fields[0], op: op, values: vals}, nil
	}
	k := strings.TrimSpace(p)
	if err := checkKey(k); err != nil {
		return requirement{}, err
	}
	return requirement{key: k, op: opExists}, nil
}

func binaryReq(k, v string, op selOp) (requirement, error) {
	k, v = strings.TrimSpace(k), strings.TrimSpace(v)
	if err := checkKey(k); err != nil {
		return requirement{}, err
	}
	if err := checkValue(v); err != nil {
		return requirement{}, err
	}
	return requirement{key: k, op: op, values: []string{v}}, nil
}

func checkKey(k string) error {
	if k == "" {
		return fmt.Errorf("empty label key")
	}
	if strings.ContainsAny(k, " \t=!(),") {
		return fmt.Errorf("label key %q has a reserved character", k)
	}
	return nil
}

func checkValue(v string) error {
	if v == "" {
		return fmt.Errorf("empty label value")
	}
	if strings.ContainsAny(v, " \t=!(),") {
		return fmt.Errorf("label value %q has a reserved character", v)
	}
	return nil
}

// Matches reports whether labels satisfy every requirement.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s.reqs {
		v, ok := labels[r.key]
		switch r.op {
		case opEq, opIn:
			if !ok || !slices.Contains(r.values, v) {
				return false
			}
		case opNotEq, opNotIn:
			if ok && slices.Contains(r.values, v) {
				return false
			}
		case opExists:
			if !ok {
				return false
			}
		case opNotExists:
			if ok {
				return false
			}
		}
	}
	return true
}

// Empty reports whether the selector matches everything.
func (s Selector) Empty() bool { return len(s.reqs) == 0 }
