package onnxrt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// RuntimeVersion is the ONNX Runtime release that scripts/fetch-ort.sh provisions and that the
// default library path points at. onnxruntime_go v1.27.0 needs C API 24, i.e. ORT >= 1.24.
const RuntimeVersion = "1.24.1"

// Environment variables that locate the library.
const (
	EnvLibrary = "EDGEFLEET_ORT_LIB" // full path of libonnxruntime.so
	EnvCache   = "EDGEFLEET_CACHE"   // cache root, default $HOME/.cache/edgefleet
)

// ErrLibraryMissing means the ONNX Runtime shared library is not where Init looked. Its message
// names the command that provisions it.
var ErrLibraryMissing = errors.New("ONNX Runtime library missing")

// ErrNotInitialized is returned by functions that need the library before Init succeeded.
var ErrNotInitialized = errors.New("onnxrt: Init has not succeeded")

var (
	initMu   sync.Mutex
	initDone bool   // the library is loaded and the environment exists
	initErr  error  // a failure after the library was touched: permanent for this process
	initPath string // the library that was loaded
)

// DefaultLibraryPath is where Init looks when given no path: $EDGEFLEET_ORT_LIB if set, else the
// file scripts/fetch-ort.sh writes, ${EDGEFLEET_CACHE:-$HOME/.cache/edgefleet}/ort/<version>/
// linux-<x64|arm64>/libonnxruntime.so.1.
func DefaultLibraryPath() string {
	if p := os.Getenv(EnvLibrary); p != "" {
		return p
	}
	cache := os.Getenv(EnvCache)
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = "/root"
		}
		cache = filepath.Join(home, ".cache", "edgefleet")
	}
	arch := runtime.GOARCH
	if arch == "amd64" {
		arch = "x64"
	}
	return filepath.Join(cache, "ort", RuntimeVersion, "linux-"+arch, "libonnxruntime.so.1")
}

// Init loads the ONNX Runtime library and creates the process-wide environment. libPath "" means
// DefaultLibraryPath. It is idempotent: later calls return the first outcome, and a call naming a
// different library after success is an error, because a process can host only one.
//
// A missing library (ErrLibraryMissing) leaves nothing behind, so Init may be called again once it
// is provisioned. Any failure after the library was opened is returned by every later call: the
// binding keeps global state we cannot reset safely.
func Init(libPath string) error {
	if libPath == "" {
		libPath = DefaultLibraryPath()
	}
	initMu.Lock()
	defer initMu.Unlock()
	if initErr != nil {
		return initErr
	}
	if initDone {
		if abs(libPath) != abs(initPath) {
			return fmt.Errorf("onnxrt: already initialized with %s, cannot switch to %s", initPath, libPath)
		}
		return nil
	}
	if st, err := os.Stat(libPath); err != nil || st.IsDir() {
		return fmt.Errorf("%w at %s: run scripts/fetch-ort.sh (or make build) to download ONNX Runtime %s, "+
			"or set %s to the library's path", ErrLibraryMissing, libPath, RuntimeVersion, EnvLibrary)
	}
	ort.SetSharedLibraryPath(libPath)
	if err := ort.InitializeEnvironment(); err != nil {
		// The binding records the loaded library's version before it checks the API level, so a
		// too-old library can be named.
		if v := ort.GetVersion(); v != "" {
			err = fmt.Errorf("%w (the library is ONNX Runtime %s; onnxruntime_go needs >= 1.24, use scripts/fetch-ort.sh)", err, v)
		}
		initErr = fmt.Errorf("onnxrt: load %s: %w", libPath, err)
		return initErr
	}
	initDone, initPath = true, libPath
	return nil
}

func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// Initialized reports whether Init has succeeded.
func Initialized() bool {
	initMu.Lock()
	defer initMu.Unlock()
	return initDone
}

// Version returns the version of the ONNX Runtime library actually loaded ("" before Init), which
// is what an agent must report: the file on disk may not be the one the manifest asked for.
func Version() string {
	if !Initialized() {
		return ""
	}
	return ort.GetVersion()
}

// LibraryPath returns the path of the loaded library ("" before Init).
func LibraryPath() string {
	initMu.Lock()
	defer initMu.Unlock()
	return initPath
}
