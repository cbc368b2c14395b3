// Package builder turns an ONNX model into a signed bundle: it reads the model's schema with ONNX
// Runtime, records golden outputs for the on-device smoke test, computes the drift reference from
// reference samples, measures the memory a session needs, and writes the bundle with ota/bundle.
// It is what `controlplane bundle build` runs.
package builder

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"filippo.io/age"

	"github.com/edgefleet/edgefleet/internal/onnxrt"
	"github.com/edgefleet/edgefleet/ota/bundle"
	"github.com/edgefleet/edgefleet/ota/golden"
	"github.com/edgefleet/edgefleet/ota/seal"
)

// Options of a build.
type Options struct {
	ModelPath  string
	Name       string
	Version    string
	Variant    string
	Kind       bundle.Kind
	Parent     string
	Golden     int    // generated golden cases (default 3)
	Reference  string // reference samples (JSON lines or .npy)
	PrePath    string
	PostPath   string
	LabelsPath string
	Embedding  string
	Provenance map[string]string
	BlockSize  int64
	Seed       uint64
	// Tolerance of the smoke test; zero means golden.DefaultTolerance.
	Tolerance golden.Tolerance
	// Progress receives one line per long step; nil for silence.
	Progress io.Writer
	// InputShapes fixes the shapes of generated golden inputs (name -> shape) for models whose
	// dynamic dimensions need particular sizes.
	InputShapes map[string][]int64
	// Quantize is "", int8, int8-static or int8-dynamic.
	Quantize string
	// MinAgreement is the quantization accuracy gate (default 0.99); Force ships a variant that
	// fails it (or is slower than fp32), recording that in the manifest.
	MinAgreement float64
	Force        bool
	// EncryptTo, when not empty, encrypts every payload file to a fresh content key sealed to
	// these age recipients (the control plane's `DATA/encryption.pub`): age1... strings or files.
	EncryptTo []string
}

// Result describes what was built.
type Result struct {
	ID       string
	Manifest *bundle.Manifest
	Size     int64
}

func (o Options) say(format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, format+"\n", args...)
	}
}

// Build writes the bundle to out.
func Build(ctx context.Context, o Options, signer bundle.Signer, out io.Writer) (*Result, error) {
	if o.Kind == "" {
		o.Kind = bundle.KindModel
	}
	if o.Golden == 0 {
		o.Golden = 3
	}
	if o.Tolerance == (golden.Tolerance{}) {
		o.Tolerance = golden.DefaultTolerance
	}
	if o.Kind != bundle.KindModel {
		return nil, fmt.Errorf("build %s bundles with BuildRuntime (bundle build --kind runtime --agent BIN)", o.Kind)
	}
	if o.Name == bundle.RuntimeName {
		return nil, fmt.Errorf("the name %q is reserved for runtime bundles (the agent itself); choose another model name", bundle.RuntimeName)
	}
	if err := onnxrt.Init(""); err != nil {
		return nil, err
	}
	model, err := os.ReadFile(o.ModelPath)
	if err != nil {
		return nil, fmt.Errorf("read model: %w", err)
	}
	o.say("reading schema of %s (%d bytes)", filepath.Base(o.ModelPath), len(model))
	rssBefore := rss()
	sess, err := onnxrt.NewSession(model, onnxrt.Options{IntraOpThreads: 1})
	if err != nil {
		return nil, fmt.Errorf("load %s in ONNX Runtime %s: %w", o.ModelPath, onnxrt.Version(), err)
	}
	defer sess.Close()
	// Pre- and post-processing graphs run around the model on the device; golden outputs, the
	// schema callers see and the drift reference must come from the same whole.
	var pipe onnxrt.Pipeline
	defer pipe.Close()
	for _, st := range []struct {
		path string
		sess **onnxrt.Session
	}{{o.PrePath, &pipe.Pre}, {o.PostPath, &pipe.Post}} {
		if st.path == "" {
			continue
		}
		b, err := os.ReadFile(st.path)
		if err == nil {
			*st.sess, err = onnxrt.NewSession(b, onnxrt.Options{IntraOpThreads: 1})
		}
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", st.path, err)
		}
	}
	if err := pipe.Check(sess.Schema()); err != nil {
		return nil, err
	}
	schema := pipe.Schema(sess.Schema())
	run := func(ctx context.Context, in []onnxrt.Tensor) ([]onnxrt.Tensor, error) { return pipe.Run(ctx, sess, in) }

	var inputs [][]onnxrt.Tensor
	var samples [][]onnxrt.Tensor
	if o.Reference != "" {
		o.say("reading reference samples from %s", o.Reference)
		samples, err = ReadSamples(o.Reference, schema)
		if err != nil {
			return nil, err
		}
		inputs = append(inputs, samples[:min(len(samples), o.Golden)]...)
	}
	if len(inputs) < o.Golden {
		gen, err := generateInputs(ctx, run, schema, o.Golden-len(inputs), o.Seed+1, o.InputShapes)
		if err != nil {
			return nil, fmt.Errorf("generate golden inputs (pass --reference with real samples, or --input-shape, for this model): %w", err)
		}
		inputs = append(inputs, gen...)
	}
	var quantFacts *bundle.Quantization
	modelPath := o.ModelPath
	if o.Quantize != "" && (pipe.Pre != nil || pipe.Post != nil) {
		return nil, fmt.Errorf("--quantize with --pre/--post is not supported yet: quantize the model alone and build the bundle from it")
	}
	if o.Quantize != "" {
		qpath, q, err := quantizeModel(ctx, o, model, samples, schema)
		if err != nil {
			return nil, err
		}
		defer os.Remove(qpath)
		quantFacts, modelPath = q, qpath
		if o.Variant == "" {
			o.Variant = "int8"
		}
		// Golden outputs and the reference must come from the model that ships.
		qb, err := os.ReadFile(qpath)
		if err != nil {
			return nil, err
		}
		qs, err := onnxrt.NewSession(qb, onnxrt.Options{IntraOpThreads: 1})
		if err != nil {
			return nil, fmt.Errorf("load the int8 model: %w", err)
		}
		defer qs.Close()
		run = func(ctx context.Context, in []onnxrt.Tensor) ([]onnxrt.Tensor, error) { return pipe.Run(ctx, qs, in) }
	}
	o.say("recording %d golden cases", len(inputs))
	gf, err := golden.Record(ctx, run, inputs, o.Tolerance)
	if err != nil {
		return nil, fmt.Errorf("record golden outputs: %w", err)
	}
	peak := int64(rss()) - int64(rssBefore)
	goldenJSON, err := json.Marshal(gf)
	if err != nil {
		return nil, err
	}

	files := []bundle.File{
		bundle.FileFromPath("model.onnx", bundle.RoleModel, modelPath),
		{Path: golden.FileName, Role: bundle.RoleGolden, Bytes: goldenJSON},
	}
	if len(samples) > 0 {
		o.say("computing the drift reference from %d samples", len(samples))
		ref, err := buildReference(ctx, run, schema, samples, o.Embedding)
		if err != nil {
			return nil, fmt.Errorf("drift reference: %w", err)
		}
		if ref != nil {
			files = append(files, bundle.File{Path: "reference.json", Role: bundle.RoleReference, Bytes: ref})
		}
	}
	for _, extra := range []struct {
		path, name string
		role       bundle.Role
	}{{o.PrePath, "pre.onnx", bundle.RolePre}, {o.PostPath, "post.onnx", bundle.RolePost}, {o.LabelsPath, "labels.txt", bundle.RoleLabels}} {
		if extra.path == "" {
			continue
		}
		if _, err := os.Stat(extra.path); err != nil {
			return nil, fmt.Errorf("%s: %w", extra.name, err)
		}
		files = append(files, bundle.FileFromPath(extra.name, extra.role, extra.path))
	}

	var encryption *bundle.Encryption
	if len(o.EncryptTo) > 0 {
		var rs []age.Recipient
		for _, arg := range o.EncryptTo {
			r, err := seal.ReadRecipient(arg)
			if err != nil {
				return nil, fmt.Errorf("--encrypt-to %s: %w", arg, err)
			}
			rs = append(rs, r)
		}
		c, err := seal.NewContent(rs...)
		if err != nil {
			return nil, err
		}
		tmp, err := os.MkdirTemp("", "edgefleet-encrypt-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		o.say("encrypting %d payload files to content key %s", len(files), c.Encryption.ContentRecipient)
		if files, err = c.EncryptFiles(files, tmp); err != nil {
			return nil, err
		}
		encryption = c.Encryption
	}

	in := bundle.BuildInput{
		Kind: o.Kind, Name: o.Name, Version: o.Version, Variant: o.Variant, Parent: o.Parent, BlockSize: o.BlockSize,
		Schema: toSchema(schema), ONNX: &bundle.ONNXInfo{Opset: schema.Opset, IRVersion: schema.IRVersion},
		Requirements: bundle.Requirements{
			ExecutionProviders: []string{onnxrt.ProviderCPU},
			MinORTVersion:      minorOf(onnxrt.Version()),
			MinOpset:           schema.Opset,
			PeakMemoryBytes:    max(peak, int64(len(model))),
		},
		Provenance:      provenance(o.Provenance),
		Quantization:    quantFacts,
		EmbeddingOutput: o.Embedding,
		Encryption:      encryption,
		Files:           files,
	}
	o.say("hashing and signing")
	cw := &countWriter{w: out}
	id, mb, err := bundle.Build(ctx, in, signer, cw)
	if err != nil {
		return nil, err
	}
	m, err := bundle.ParseManifest(mb)
	if err != nil {
		return nil, err
	}
	o.say("built %s@%s: %d bytes, id %s", o.Name, o.Version, cw.n, id)
	return &Result{ID: id, Manifest: m, Size: cw.n}, nil
}

func toSchema(s onnxrt.Schema) *bundle.Schema {
	conv := func(ts []onnxrt.TensorInfo) []bundle.Tensor {
		var out []bundle.Tensor
		for _, t := range ts {
			out = append(out, bundle.Tensor{Name: t.Name, Datatype: string(t.DType), Shape: t.Shape, DimNames: t.DimNames})
		}
		return out
	}
	return &bundle.Schema{Inputs: conv(s.Inputs), Outputs: conv(s.Outputs)}
}

// provenance maps --provenance key=value flags onto the manifest's fields.
func provenance(kv map[string]string) bundle.Provenance {
	var p bundle.Provenance
	for k, v := range kv {
		switch k {
		case "code_revision", "revision", "git":
			p.CodeRevision = v
		case "dataset", "datasets", "dataset_ids":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					p.DatasetIDs = append(p.DatasetIDs, d)
				}
			}
		case "params_digest", "params":
			p.ParamsDigest = v
		default:
			if p.Extra == nil {
				p.Extra = map[string]string{}
			}
			p.Extra[k] = v
		}
	}
	return p
}

func minorOf(v string) string {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return v
	}
	return parts[0] + "." + parts[1] + ".0"
}

// rss is the process's resident set size, the cheapest honest measure of what loading and running
// a session costs.
func rss() uint64 {
	runtime.GC()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, res uint64
	fmt.Sscan(string(b), &size, &res)
	return res * uint64(os.Getpagesize())
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// generateInputs makes golden inputs that the model actually runs on. Dynamic dimensions default
// to 1, which some models reject (an audio model padding a frame needs more than one sample), so
// on failure the non-batch dynamic dimensions are tried at larger sizes.
func generateInputs(ctx context.Context, run func(context.Context, []onnxrt.Tensor) ([]onnxrt.Tensor, error), schema onnxrt.Schema, n int, seed uint64, fixed map[string][]int64) ([][]onnxrt.Tensor, error) {
	var lastErr error
	for _, size := range []int64{1, 64, 512} {
		shapes := map[string][]int64{}
		for _, in := range schema.Inputs {
			if s, ok := fixed[in.Name]; ok {
				shapes[in.Name] = s
				continue
			}
			if in.Shape == nil {
				continue
			}
			s := make([]int64, len(in.Shape))
			for i, d := range in.Shape {
				switch {
				case d >= 0:
					s[i] = d
				case i == 0:
					s[i] = 1 // batch
				default:
					s[i] = size
				}
			}
			shapes[in.Name] = s
		}
		gen, err := onnxrt.GenerateInputs(schema, n, seed, shapes)
		if err != nil {
			return nil, err
		}
		if _, err := run(ctx, gen[0]); err != nil {
			lastErr = err
			continue
		}
		return gen, nil
	}
	return nil, lastErr
}
