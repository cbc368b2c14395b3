// Package launcher runs the agent from its runtime slots: `agent launch` (what systemd starts) is
// the installed binary acting as a small supervisor that starts `agent run` from the active
// runtime slot (DATA/runtime/a or b), or from itself when no runtime bundle was ever installed.
// An agent that installed a runtime bundle asks for a switch (request.json, exit status 75); the
// launcher starts the new agent on trial and commits it only when that agent writes healthy.json
// (it connected to the broker and published its reported state). A new agent that exits
// repeatedly, or is not healthy by the deadline, is stopped and the previous one started again,
// with the outcome in launch.json for it to report.
//
// File ownership keeps the two processes from racing: the launcher alone writes launch.json; the
// agent alone writes request.json and healthy.json. Every file is written atomically, and every
// launcher transition is persisted before it acts, so a power cut at any point restarts into an
// agent that worked before, or into the trial it was in (whose start count survives).
package launcher

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/edgefleet/edgefleet/internal/atomicfile"
	"github.com/edgefleet/edgefleet/ota/bundle"
)

// Names on disk and in the environment.
const (
	// Dir is the runtime folder under the agent's data folder; slots are Dir/a and Dir/b.
	Dir         = "runtime"
	StateFile   = "launch.json"
	RequestFile = "request.json"
	HealthyFile = "healthy.json"
	// AgentFile and ORTLibFile are the payload names of a runtime bundle's agent binary and
	// (optional) ONNX Runtime library.
	AgentFile  = bundle.RuntimeAgentFile
	ORTLibFile = bundle.RuntimeORTLibFile
	// EnvSlot tells a launched agent which slot it runs from: a, b or installed. Its absence
	// means no launcher supervises the agent, so runtime bundles cannot be applied.
	EnvSlot = "EDGEFLEET_LAUNCH_SLOT"
	// Installed is EnvSlot's value for the binary the launcher itself is (from the .deb).
	Installed = "installed"
	// ExitSwitch is the agent's exit status when it asks the launcher for a switch (EX_TEMPFAIL).
	ExitSwitch = 75
)

// Outcomes of a trial and the reasons of a revert, as the agent reports them.
const (
	ResultCommitted  = "committed"
	ResultReverted   = "reverted"
	ReasonUnhealthy  = "runtime_unhealthy" // not healthy by the deadline
	ReasonCrashed    = "runtime_crashed"   // exited repeatedly during its trial
	ReasonCorrupt    = "runtime_corrupt"   // the slot's files no longer match their manifest
	ReasonNoLauncher = "no_launcher"       // the agent runs without `agent launch`
	// ResultSuperseded: the package manager installed another agent binary, which runs now.
	ResultSuperseded = "superseded"
	ReasonPackage    = "package_upgrade"
)

// Slot is one runtime slot's content.
type Slot struct {
	Name    string `json:"name"` // "a" or "b"
	Bundle  string `json:"bundle"`
	Version string `json:"version"`
}

// Trial is a new agent being tried.
type Trial struct {
	Slot
	// Bake is how long the new agent must run, connected, before it calls itself healthy (the
	// assignment's bake); the deadline is the trial timeout plus Bake.
	Bake     time.Duration `json:"bake,omitempty"`
	Deadline time.Time     `json:"deadline"`
	// Starts counts the trial's process starts, persisted before each, so crashes and power cuts
	// count alike.
	Starts int `json:"starts"`
}

// Outcome is how the last trial ended.
type Outcome struct {
	Bundle  string    `json:"bundle"`
	Version string    `json:"version"`
	Result  string    `json:"result"`
	Reason  string    `json:"reason,omitempty"`
	Message string    `json:"message,omitempty"`
	At      time.Time `json:"at"`
}

// State is launch.json. A nil Active means the installed binary; Previous is what Active
// replaced (nil: the installed binary).
type State struct {
	Active   *Slot    `json:"active,omitempty"`
	Previous *Slot    `json:"previous,omitempty"`
	Trial    *Trial   `json:"trial,omitempty"`
	Last     *Outcome `json:"last,omitempty"`
	// Installed is the version of the installed binary (the launcher) that wrote this state; a
	// different one at start means the package was upgraded or downgraded.
	Installed string `json:"installed,omitempty"`
}

// Request is request.json: the agent asks to run the bundle unpacked in Slot.
type Request struct {
	Slot
	Bake time.Duration `json:"bake,omitempty"`
}

// Healthy is healthy.json: the agent on trial connected and reported.
type Healthy struct {
	Bundle  string    `json:"bundle"`
	Version string    `json:"version"`
	At      time.Time `json:"at"`
}

// RuntimeDir is DATA/runtime.
func RuntimeDir(dataDir string) string { return filepath.Join(dataDir, Dir) }

// SlotDir is DATA/runtime/<name>.
func SlotDir(dataDir, name string) string { return filepath.Join(dataDir, Dir, name) }

// Other is the slot that is not name ("a" for anything but "a").
func Other(name string) string {
	if name == "a" {
		return "b"
	}
	return "a"
}

// ReadState reads launch.json; a missing file is the zero state (the installed binary).
func ReadState(dataDir string) (State, error) {
	var st State
	err := readJSON(filepath.Join(RuntimeDir(dataDir), StateFile), &st)
	if errors.Is(err, os.ErrNotExist) {
		return State{}, nil
	}
	return st, err
}

func writeState(dataDir string, st State) error {
	return writeJSON(filepath.Join(RuntimeDir(dataDir), StateFile), st)
}

// WriteRequest records the agent's switch request.
func WriteRequest(dataDir string, r Request) error {
	return writeJSON(filepath.Join(RuntimeDir(dataDir), RequestFile), r)
}

// ReadRequest returns the pending switch request, or nil.
func ReadRequest(dataDir string) (*Request, error) {
	var r Request
	err := readJSON(filepath.Join(RuntimeDir(dataDir), RequestFile), &r)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// WriteHealthy is the trial agent's "I am up".
func WriteHealthy(dataDir string, h Healthy) error {
	return writeJSON(filepath.Join(RuntimeDir(dataDir), HealthyFile), h)
}

func readHealthy(dataDir string) (*Healthy, error) {
	var h Healthy
	err := readJSON(filepath.Join(RuntimeDir(dataDir), HealthyFile), &h)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &h, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s is corrupt: %w", path, err)
	}
	return nil
}

func writeJSON(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	return atomicfile.WriteFile(path, b, 0o600)
}

// CheckSlot verifies that a slot folder holds the bundle it is said to hold: manifest digest
// equal to the bundle id, and the agent binary (and library, when present) matching the manifest.
// It does not check the signature: the agent did that before unpacking, and the launcher, which
// holds no keys, guards against disk rot and half-written slots here. It returns the paths of
// the binary and of the library ("" when the bundle carries none).
func CheckSlot(dataDir string, s Slot) (bin, ortLib string, err error) {
	dir := SlotDir(dataDir, s.Name)
	mb, err := os.ReadFile(filepath.Join(dir, bundle.ManifestName))
	if err != nil {
		return "", "", err
	}
	if bundle.ID(mb) != s.Bundle {
		return "", "", fmt.Errorf("slot %s holds bundle %s, not %s", s.Name, bundle.ID(mb), s.Bundle)
	}
	m, err := bundle.ParseManifest(mb)
	if err != nil {
		return "", "", err
	}
	if m.File(AgentFile) == nil {
		return "", "", fmt.Errorf("bundle %s has no %q file", s.Bundle, AgentFile)
	}
	for _, f := range m.Files {
		if err := checkFile(filepath.Join(dir, f.Path), f); err != nil {
			return "", "", err
		}
	}
	bin = filepath.Join(dir, AgentFile)
	if m.File(ORTLibFile) != nil {
		ortLib = filepath.Join(dir, ORTLibFile)
	}
	return bin, ortLib, nil
}

func checkFile(path string, f bundle.FileEntry) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	h := sha256.New()
	n, err := io.Copy(h, fh)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if n != f.Size || hex.EncodeToString(h.Sum(nil)) != f.SHA256 {
		return fmt.Errorf("%s does not match its manifest: %w", path, bundle.ErrDigest)
	}
	return nil
}
