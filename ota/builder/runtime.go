package builder

import (
	"context"
	"debug/elf"
	"fmt"
	"io"
	"os"

	"github.com/edgefleet/edgefleet/ota/bundle"
)

// RuntimeOptions of a runtime bundle: the agent binary and, optionally, the ONNX Runtime library
// it should load, for one architecture.
type RuntimeOptions struct {
	AgentPath  string
	ORTLibPath string
	Version    string
	// Arch is the Go architecture (amd64, arm64); empty reads it from the binary's ELF header.
	Arch       string
	Provenance map[string]string
	BlockSize  int64
	Progress   io.Writer
}

// BuildRuntime writes a signed runtime bundle named bundle.RuntimeName. It needs no ONNX Runtime:
// nothing in it is a model.
func BuildRuntime(ctx context.Context, o RuntimeOptions, signer bundle.Signer, out io.Writer) (*Result, error) {
	if o.AgentPath == "" {
		return nil, fmt.Errorf("a runtime bundle needs the agent binary (--agent)")
	}
	arch := o.Arch
	if arch == "" {
		a, err := elfArch(o.AgentPath)
		if err != nil {
			return nil, fmt.Errorf("%s: %w; pass --arch", o.AgentPath, err)
		}
		arch = a
	}
	files := []bundle.File{bundle.FileFromPath(bundle.RuntimeAgentFile, bundle.RoleRuntime, o.AgentPath)}
	if _, err := os.Stat(o.AgentPath); err != nil {
		return nil, fmt.Errorf("agent binary: %w", err)
	}
	if o.ORTLibPath != "" {
		if _, err := os.Stat(o.ORTLibPath); err != nil {
			return nil, fmt.Errorf("ONNX Runtime library: %w", err)
		}
		files = append(files, bundle.FileFromPath(bundle.RuntimeORTLibFile, bundle.RoleRuntime, o.ORTLibPath))
	}
	// The variant is the arch, so that one version exists once per architecture in the registry
	// (edgefleet-agent@1.5.0:arm64, ...:amd64) and a rollout picks it with --selector arch=arm64.
	in := bundle.BuildInput{
		Kind: bundle.KindRuntime, Name: bundle.RuntimeName, Version: o.Version, Variant: arch, BlockSize: o.BlockSize,
		Requirements: bundle.Requirements{Arch: []string{arch}},
		Provenance:   provenance(o.Provenance),
		Files:        files,
	}
	cw := &countWriter{w: out}
	id, mb, err := bundle.Build(ctx, in, signer, cw)
	if err != nil {
		return nil, err
	}
	m, err := bundle.ParseManifest(mb)
	if err != nil {
		return nil, err
	}
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "built %s for %s: %d bytes, id %s\n", m.Ref(), arch, cw.n, id)
	}
	return &Result{ID: id, Manifest: m, Size: cw.n}, nil
}

// elfArch reads the Go architecture name of an ELF executable.
func elfArch(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", fmt.Errorf("not an ELF executable: %w", err)
	}
	defer f.Close()
	switch f.Machine {
	case elf.EM_X86_64:
		return "amd64", nil
	case elf.EM_AARCH64:
		return "arm64", nil
	case elf.EM_ARM:
		return "arm", nil
	case elf.EM_RISCV:
		return "riscv64", nil
	}
	return "", fmt.Errorf("unknown ELF machine %v", f.Machine)
}
