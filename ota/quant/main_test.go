package quant

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
)

// ortSkip is why tests that need ONNX Runtime cannot run here ("" when they can).
var ortSkip string

// TestMain provisions ONNX Runtime with the project's script, as internal/onnxrt's tests do.
// Without it the ORT tests skip loudly; under CI=true that is a failure.
func TestMain(m *testing.M) {
	lib, err := runScript("fetch-ort.sh")
	if err == nil {
		err = onnxrt.Init(lib)
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

// realModel returns the bytes of one of the models scripts/fetch-models.sh provides.
func realModel(t testing.TB, name string) []byte {
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
