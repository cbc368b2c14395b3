package onnxrt

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// ortSkip is why tests that need ONNX Runtime cannot run here ("" when they can).
var ortSkip string

// TestMain provisions the ONNX Runtime library with the project's script, as a developer would,
// and initializes it once for the whole package. Without the library every ORT test skips loudly;
// in CI (CI=true) that is a failure instead, so a broken provisioning step cannot pass unseen.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	lib, err := runScript("fetch-ort.sh")
	if err == nil {
		err = Init(lib)
	}
	if err != nil {
		ortSkip = "ONNX Runtime unavailable: " + err.Error()
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, "FAIL:", ortSkip)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "WARNING: SKIPPING ONNX Runtime tests:", ortSkip)
	}
	os.Exit(m.Run())
}

// runScript runs scripts/<name> from the repository root and returns its trimmed stdout.
func runScript(name string) (string, error) {
	root, err := filepath.Abs("../..")
	if err != nil {
		return "", err
	}
	cmd := exec.Command(filepath.Join(root, "scripts", name))
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("scripts/%s: %w: %s", name, err, strings.TrimSpace(string(ee.Stderr)))
		}
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

func needORT(t testing.TB) {
	t.Helper()
	if ortSkip != "" {
		t.Skip("SKIPPING: " + ortSkip)
	}
}

var modelsDir struct {
	path string
	err  error
	done bool
}

// model returns the bytes of one of the real models from scripts/fetch-models.sh.
func model(t testing.TB, name string) []byte {
	t.Helper()
	needORT(t)
	if !modelsDir.done {
		modelsDir.path, modelsDir.err = runScript("fetch-models.sh")
		modelsDir.done = true
	}
	if modelsDir.err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(modelsDir.err)
		}
		t.Skip("SKIPPING: models unavailable: " + modelsDir.err.Error())
	}
	b, err := os.ReadFile(filepath.Join(modelsDir.path, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// childEnv makes the test binary act as a fresh process for tests of Init, which can succeed
// only once per process.
const childEnv = "ONNXRT_TEST_CHILD"

func childMain() int {
	switch os.Getenv(childEnv) {
	case "missing":
		err := Init(filepath.Join(os.TempDir(), "no-such-dir", "libonnxruntime.so.1"))
		fmt.Println(err)
		if !errors.Is(err, ErrLibraryMissing) {
			return 3
		}
	case "default-missing":
		// The default path honours EDGEFLEET_CACHE, which the parent points at an empty folder.
		err := Init("")
		fmt.Println(err)
		if !errors.Is(err, ErrLibraryMissing) {
			return 3
		}
	default:
		return 2
	}
	return 0
}
