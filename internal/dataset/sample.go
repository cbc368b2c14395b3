package dataset

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/edgefleet/edgefleet/internal/oip"
)

// Sample is one captured inference: what went in and what came out.
type Sample struct {
	ID      string       `json:"id,omitempty"` // the request id, when the caller gave one
	At      time.Time    `json:"at"`
	Model   string       `json:"model"`
	Version string       `json:"version,omitempty"`
	Bundle  string       `json:"bundle,omitempty"`
	Inputs  []oip.Tensor `json:"inputs"`
	Outputs []oip.Tensor `json:"outputs"`
}

// MaxLine bounds one sample's JSON line when reading (a large image as JSON numbers).
const MaxLine = 64 << 20

// ReadSamples calls fn for every JSON line of r.
func ReadSamples(r io.Reader, fn func(line []byte, s Sample) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var s Sample
		if err := json.Unmarshal(line, &s); err != nil {
			return fmt.Errorf("sample %d: %w", n, err)
		}
		if err := fn(line, s); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read samples: %w", err)
	}
	return nil
}
