package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/edgefleet/edgefleet/internal/atomicfile"
	"github.com/edgefleet/edgefleet/internal/cli"
	"github.com/edgefleet/edgefleet/ota/builder"
	"github.com/edgefleet/edgefleet/ota/bundle"
	"github.com/edgefleet/edgefleet/ota/sign"
	"github.com/edgefleet/edgefleet/ota/trust"
)

func keysCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "generate" {
		return errors.New("usage: controlplane keys generate --out DIR [--role release|root|control]")
	}
	fs := flag.NewFlagSet("keys generate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cli.Usage(fs, "controlplane keys generate --out DIR [--role release|root|control]")
	out := fs.String("out", "", "folder for ROLE.key (PKCS#8 PEM, 0600) and ROLE.pub")
	role := fs.String("role", "release", "release (signs bundles), root (signs trust documents; keep offline) or control (signs desired states)")
	if err := cli.Parse(fs, args[1:]); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("--out DIR is required")
	}
	r, err := trust.ParseRole(*role)
	if err != nil {
		return err
	}
	keyPath, pubPath, id, err := trust.GenerateKeyFiles(*out, r)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s key %s\n  private: %s (keep it secret%s)\n  public:  %s\n", r, id, keyPath, map[bool]string{true: "; keep it offline", false: ""}[r == trust.RoleRoot], pubPath)
	return nil
}

func trustCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "sign" {
		return errors.New("usage: controlplane trust sign --root root.key --version N --release a.pub [--release b.pub] --control control.pub --out trust.json")
	}
	fs := flag.NewFlagSet("trust sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cli.Usage(fs, "controlplane trust sign --root root.key --version N --release a.pub --control control.pub --out trust.json")
	var roots, rootPubs, releases, controls, revoked cli.Strings
	fs.Var(&roots, "root", "root private key that signs (repeat with the old and the new root to rotate it)")
	fs.Var(&rootPubs, "root-pub", "root public key to list (default: the public halves of --root); during a rotation list only the new one")
	fs.Var(&releases, "release", "release public key to trust (repeatable)")
	fs.Var(&controls, "control", "control public key to trust (repeatable)")
	fs.Var(&revoked, "revoke", "key id or public key file to revoke (repeatable)")
	version := fs.Uint64("version", 0, "document version; must exceed the one devices hold")
	out := fs.String("out", "trust.json", "output file")
	if err := cli.Parse(fs, args[1:]); err != nil {
		return err
	}
	doc, err := trust.SignTrustFile(ctx, trust.SignFileOptions{Version: *version, RootKeys: roots, RootPubs: rootPubs, ReleasePubs: releases, ControlPubs: controls, Revoked: revoked, Out: *out})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "trust document version %d: %d release key(s), %d control key(s), %d revoked -> %s\n", doc.Version, len(doc.ReleaseKeys), len(doc.ControlKeys), len(doc.Revoked), *out)
	return nil
}

func bundleCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	usage := "usage: controlplane bundle build|verify|inspect (run with --help for flags)"
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "build":
		return bundleBuild(ctx, args[1:], stdout, stderr)
	case "verify":
		return bundleVerify(ctx, args[1:], stdout, stderr)
	case "inspect":
		return bundleInspect(args[1:], stdout, stderr)
	}
	return fmt.Errorf("bundle: unknown command %q; %s", args[0], usage)
}

type kvFlag map[string]string

func (k kvFlag) String() string { return "" }

// Set takes one key=value; the value may hold commas (dataset=ds-1,ds-2).
func (k kvFlag) Set(v string) error {
	key, val, ok := strings.Cut(v, "=")
	if !ok || key == "" {
		return fmt.Errorf("%q: want key=value", v)
	}
	k[key] = val
	return nil
}

func bundleBuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bundle build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cli.Usage(fs, "controlplane bundle build --model M.onnx --name NAME --version SEMVER --key KEY --out FILE [flags]\n       controlplane bundle build --kind runtime --agent BIN [--ort-lib LIB] --version SEMVER --key KEY --out FILE")
	model := fs.String("model", "", "the ONNX model")
	name := fs.String("name", "", "model name")
	version := fs.String("version", "", "semantic version, e.g. 1.2.0")
	key := fs.String("key", "", "release signing key (PKCS#8 PEM, or cosign.key with COSIGN_PASSWORD)")
	out := fs.String("out", "", "bundle file to write")
	goldenN := fs.Int("golden", 3, "generated golden cases for the smoke test (reference samples are used first)")
	reference := fs.String("reference", "", "reference samples: JSON lines of inference requests, or .npy of the single input")
	parent := fs.String("parent", "", "parent model NAME@VERSION")
	pre := fs.String("pre", "", "pre-processing ONNX graph")
	post := fs.String("post", "", "post-processing ONNX graph")
	labels := fs.String("labels", "", "labels file, one class per line")
	embedding := fs.String("embedding", "", "name of an embedding output to profile for drift")
	variant := fs.String("variant", "", "variant name, e.g. fp32 or int8")
	kind := fs.String("kind", "model", "model or runtime")
	agentBin := fs.String("agent", "", "runtime bundles: the agent binary (built with its version stamped, see make build)")
	ortLib := fs.String("ort-lib", "", "runtime bundles: the ONNX Runtime library the new agent should load (optional)")
	arch := fs.String("arch", "", "runtime bundles: the binary's architecture (default: read from its ELF header)")
	quantize := fs.String("quantize", "", "int8 (static QDQ, calibrated on --reference; dynamic when nothing static applies), int8-static or int8-dynamic")
	minAgreement := fs.Float64("min-agreement", 0.99, "accuracy gate of --quantize: agreement of int8 with fp32 on held-out reference samples")
	force := fs.Bool("force", false, "ship an int8 variant that fails the accuracy gate or is slower than fp32 (recorded in the manifest)")
	blockSize := fs.Int64("block-size", 0, "transfer block size in bytes (default 65536)")
	shapes := kvFlag{}
	fs.Var(shapes, "input-shape", "shape of generated golden inputs, name=1x512 (for dynamic dimensions); repeatable")
	prov := kvFlag{}
	fs.Var(prov, "provenance", "provenance key=value (code_revision, dataset, params_digest, or anything else); repeatable")
	quiet := fs.Bool("quiet", false, "no progress output")
	var encryptTo cli.Strings
	fs.Var(&encryptTo, "encrypt-to", "encrypt the payload to a fresh content key sealed to this age recipient: the control plane's DATA/encryption.pub (age1... or a file); repeatable")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if bundle.Kind(*kind) == bundle.KindRuntime {
		return buildRuntime(ctx, *agentBin, *ortLib, *arch, *name, *version, *key, *out, *blockSize, prov, *quiet, stdout, stderr)
	}
	for flagName, v := range map[string]string{"model": *model, "name": *name, "version": *version, "key": *key, "out": *out} {
		if v == "" {
			return fmt.Errorf("--%s is required", flagName)
		}
	}
	signer, err := sign.LoadSigner(*key)
	if err != nil {
		return err
	}
	inShapes := map[string][]int64{}
	for name, v := range shapes {
		var shape []int64
		for _, d := range strings.Split(v, "x") {
			n, err := strconv.ParseInt(d, 10, 64)
			if err != nil || n < 0 {
				return fmt.Errorf("--input-shape %s=%s: want dimensions like 1x512", name, v)
			}
			shape = append(shape, n)
		}
		inShapes[name] = shape
	}
	o := builder.Options{InputShapes: inShapes, ModelPath: *model, Name: *name, Version: *version, Variant: *variant, Kind: bundle.Kind(*kind),
		Parent: *parent, Golden: *goldenN, Reference: *reference, PrePath: *pre, PostPath: *post, LabelsPath: *labels,
		Embedding: *embedding, Provenance: prov, BlockSize: *blockSize, Quantize: *quantize, MinAgreement: *minAgreement, Force: *force}
	o.EncryptTo = encryptTo
	if !*quiet {
		o.Progress = stderr
	}
	return writeBundle(*out, stdout, func(w io.Writer) (*builder.Result, error) { return builder.Build(ctx, o, signer, w) })
}

// buildRuntime is `bundle build --kind runtime`: the agent binary (and library) for one arch.
func buildRuntime(ctx context.Context, agentBin, ortLib, arch, name, version, key, out string, blockSize int64, prov map[string]string, quiet bool, stdout, stderr io.Writer) error {
	for flagName, v := range map[string]string{"agent": agentBin, "version": version, "key": key, "out": out} {
		if v == "" {
			return fmt.Errorf("--%s is required with --kind runtime", flagName)
		}
	}
	if name != "" && name != bundle.RuntimeName {
		return fmt.Errorf("runtime bundles are named %q (the name the agent looks for in its desired state); drop --name or use that", bundle.RuntimeName)
	}
	signer, err := sign.LoadSigner(key)
	if err != nil {
		return err
	}
	o := builder.RuntimeOptions{AgentPath: agentBin, ORTLibPath: ortLib, Version: version, Arch: arch, Provenance: prov, BlockSize: blockSize}
	if !quiet {
		o.Progress = stderr
	}
	return writeBundle(out, stdout, func(w io.Writer) (*builder.Result, error) { return builder.BuildRuntime(ctx, o, signer, w) })
}

// writeBundle builds into a temp file next to out and renames it into place, printing the id.
func writeBundle(out string, stdout io.Writer, build func(io.Writer) (*builder.Result, error)) error {
	tmp, err := os.CreateTemp(filepath.Dir(out), ".bundle-*")
	if err != nil {
		return fmt.Errorf("create output: %w", err)
	}
	defer os.Remove(tmp.Name())
	res, err := build(tmp)
	if err == nil {
		err = tmp.Chmod(0o644) // a bundle is public; its signature protects it
	}
	if err == nil {
		err = tmp.Sync()
	}
	tmp.Close()
	if err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(filepath.Dir(out)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\n", res.ID)
	return nil
}

func bundleVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bundle verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cli.Usage(fs, "controlplane bundle verify --key PUB [--key PUB2] FILE")
	var keys cli.Strings
	fs.Var(&keys, "key", "trusted release public key (PEM, cosign.pub works); repeatable")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if len(keys) == 0 || fs.NArg() != 1 {
		return errors.New("usage: controlplane bundle verify --key PUB FILE")
	}
	var vs []bundle.Verifier
	for _, k := range keys {
		v, err := sign.LoadVerifier(k)
		if err != nil {
			return err
		}
		vs = append(vs, v)
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := bundle.Open(ctx, f, vs, bundle.Limits{})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "OK %s %s@%s (%d files, signature and every digest verified)\n", b.ID, b.Manifest.Name, b.Manifest.Version, len(b.Manifest.Files))
	return nil
}

func bundleInspect(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bundle inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cli.Usage(fs, "controlplane bundle inspect FILE")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: controlplane bundle inspect FILE")
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := bundle.Inspect(f)
	if err != nil {
		return err
	}
	// Pretty-printed for people; the bundle id is the SHA-256 of the compact bytes inside the file.
	var pretty strings.Builder
	var v any
	if json.Unmarshal(b.ManifestBytes, &v) == nil {
		enc := json.NewEncoder(&pretty)
		enc.SetIndent("", "  ")
		enc.Encode(v)
		fmt.Fprint(stdout, pretty.String())
		return nil
	}
	_, err = stdout.Write(b.ManifestBytes)
	return err
}
