package oip

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// scanner is a small JSON reader for the request envelope: it walks objects and arrays in place
// and hands out byte spans, so tensor data is parsed once, into its final slice.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) errf(format string, args ...any) error {
	return fmt.Errorf("at byte %d: %s", s.i, fmt.Sprintf(format, args...))
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) expect(c byte) error {
	s.ws()
	if s.i >= len(s.b) {
		return s.errf("unexpected end, want %q", c)
	}
	if s.b[s.i] != c {
		return s.errf("got %q, want %q", s.b[s.i], c)
	}
	s.i++
	return nil
}

// object calls member for each key, positioned at the value, which member must consume.
func (s *scanner) object(member func(key string) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return nil
	}
	for {
		key, err := s.str()
		if err != nil {
			return err
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := member(key); err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return s.errf("unexpected end of object")
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return s.errf("got %q in object, want ',' or '}'", s.b[s.i])
		}
	}
}

// array calls elem for each element, which elem must consume.
func (s *scanner) array(elem func() error) error {
	if err := s.expect('['); err != nil {
		return err
	}
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return s.errf("unexpected end of array")
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return s.errf("got %q in array, want ',' or ']'", s.b[s.i])
		}
	}
}

// strSpan returns the span of a string token, quotes included, and whether it has escapes.
func (s *scanner) strSpan() ([]byte, bool, error) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false, s.errf("want a string")
	}
	start, esc := s.i, false
	for s.i++; s.i < len(s.b); s.i++ {
		switch c := s.b[s.i]; {
		case c == '\\':
			esc = true
			s.i++
		case c == '"':
			s.i++
			return s.b[start:s.i], esc, nil
		case c < 0x20:
			return nil, false, s.errf("control character in string")
		}
	}
	return nil, false, s.errf("unterminated string")
}

func (s *scanner) str() (string, error) {
	span, esc, err := s.strSpan()
	if err != nil {
		return "", err
	}
	if !esc {
		return string(span[1 : len(span)-1]), nil
	}
	var v string
	if err := json.Unmarshal(span, &v); err != nil {
		return "", s.errf("bad string: %v", err)
	}
	return v, nil
}

// scalar returns the token of a number, literal or string (quotes included).
func (s *scanner) scalar() ([]byte, error) {
	s.ws()
	if s.i >= len(s.b) {
		return nil, s.errf("unexpected end")
	}
	switch c := s.b[s.i]; {
	case c == '"':
		span, _, err := s.strSpan()
		return span, err
	case c == '-' || (c >= '0' && c <= '9') || c == 't' || c == 'f' || c == 'n':
		start := s.i
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', ']', '}', ' ', '\t', '\n', '\r':
				return s.b[start:s.i], nil
			}
			s.i++
		}
		return s.b[start:s.i], nil
	case c == '{':
		return nil, s.errf("an object where a scalar belongs")
	}
	return nil, s.errf("unexpected %q", s.b[s.i])
}

func (s *scanner) integer() (int64, error) {
	tok, err := s.scalar()
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(bstr(tok), 10, 64)
	if err != nil {
		return 0, s.errf("%s is not an integer", tok)
	}
	return v, nil
}

var errDepth = errors.New("value nested too deeply")

// raw consumes one value of any kind and returns its span. Scalars are checked only for their
// shape here; whoever parses the span checks them fully.
func (s *scanner) raw() ([]byte, error) {
	s.ws()
	start := s.i
	if err := s.skip(0); err != nil {
		return nil, err
	}
	return s.b[start:s.i], nil
}

func (s *scanner) skip(depth int) error {
	if depth > 64 {
		return errDepth
	}
	s.ws()
	if s.i >= len(s.b) {
		return s.errf("unexpected end")
	}
	switch s.b[s.i] {
	case '{':
		return s.object(func(string) error { return s.skip(depth + 1) })
	case '[':
		return s.array(func() error { return s.skip(depth + 1) })
	}
	tok, err := s.scalar()
	if err != nil {
		return err
	}
	if tok[0] != '"' && !validScalar(tok) {
		return s.errf("invalid value %q", tok)
	}
	return nil
}

// validScalar checks a literal or number token by JSON's grammar; json.Valid per element would
// cost more than parsing the element.
func validScalar(tok []byte) bool {
	switch string(tok) {
	case "true", "false", "null":
		return true
	}
	i := 0
	if i < len(tok) && tok[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for ; i < len(tok) && tok[i] >= '0' && tok[i] <= '9'; i++ {
			n++
		}
		return n
	}
	if digits() == 0 {
		return false
	}
	if i < len(tok) && tok[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(tok) && (tok[i] == 'e' || tok[i] == 'E') {
		i++
		if i < len(tok) && (tok[i] == '+' || tok[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(tok)
}
