package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/controlplane/audit"
	"github.com/edgefleet/edgefleet/controlplane/auth"
	"github.com/edgefleet/edgefleet/controlplane/bundles"
	"github.com/edgefleet/edgefleet/controlplane/datasets"
	"github.com/edgefleet/edgefleet/controlplane/fleet"
	"github.com/edgefleet/edgefleet/controlplane/ingest"
	"github.com/edgefleet/edgefleet/controlplane/rollout"
	"github.com/edgefleet/edgefleet/deploy"
	"github.com/edgefleet/edgefleet/internal/enroll"
	"github.com/edgefleet/edgefleet/internal/wire"
	"github.com/edgefleet/edgefleet/ota/desired"
	"github.com/edgefleet/edgefleet/telemetry"
)

// spec is the served document, decoded.
func spec(t *testing.T) map[string]any {
	t.Helper()
	b, err := api.OpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
	return doc
}

// engine builds the real router. Handlers are never called, so the dependencies stay nil; a
// Metrics handler is given because /metrics is registered only with one.
func engine(t *testing.T) *gin.Engine {
	t.Helper()
	e, ok := api.New(api.Config{Metrics: http.NotFoundHandler()}).(*gin.Engine)
	if !ok {
		t.Fatal("api.New no longer returns a *gin.Engine; adapt this test to list its routes")
	}
	return e
}

var ginParam = regexp.MustCompile(`[:*]([A-Za-z0-9_]+)`)

// described reports whether a route belongs in the API description: the console's pages and
// assets (GET /, /static/...) are HTML for browsers, not API.
func described(path string) bool {
	return strings.HasPrefix(path, "/api/") || path == "/healthz" || path == "/metrics"
}

var methods = []string{"get", "put", "post", "delete", "patch", "head", "options"}

func TestOpenAPICoversEveryRoute(t *testing.T) {
	doc := spec(t)
	paths := doc["paths"].(map[string]any)
	inSpec := map[string]bool{}
	for p, item := range paths {
		for _, m := range methods {
			if _, ok := item.(map[string]any)[m]; ok {
				inSpec[strings.ToUpper(m)+" "+p] = true
			}
		}
	}
	routes := map[string]bool{}
	for _, r := range engine(t).Routes() {
		if !described(r.Path) {
			t.Logf("not described (console page or asset): %s %s", r.Method, r.Path)
			continue
		}
		routes[r.Method+" "+ginParam.ReplaceAllString(r.Path, "{$1}")] = true
	}
	for _, k := range sortedKeys(routes) {
		if !inSpec[k] {
			t.Errorf("route %s is not described in controlplane/api/openapi.yaml", k)
		}
	}
	for _, k := range sortedKeys(inSpec) {
		if !routes[k] {
			t.Errorf("openapi.yaml describes %s, but no such route is registered", k)
		}
	}
	if len(routes) < 20 {
		t.Errorf("only %d routes found; is the engine built as the control plane builds it?", len(routes))
	}
}

// TestOpenAPIWellFormed checks what a client generator trips over: dangling $refs, path
// parameters without a declaration, duplicate operationIds, operations without answers.
func TestOpenAPIWellFormed(t *testing.T) {
	doc := spec(t)
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.") {
		t.Fatalf("openapi version %q", v)
	}
	walk(doc, func(n map[string]any) {
		if ref, ok := n["$ref"].(string); ok {
			if _, err := resolve(doc, ref); err != nil {
				t.Error(err)
			}
		}
		// In a YAML flow mapping, {description: a, b} makes "b" a key with no value: the
		// document uses no nulls, so any is such a slip.
		for k, v := range n {
			if v == nil {
				t.Errorf("key %q has no value: quote descriptions that contain a comma", k)
			}
		}
	})
	schemes := doc["components"].(map[string]any)["securitySchemes"].(map[string]any)
	ops := map[string]string{}
	for p, item := range doc["paths"].(map[string]any) {
		item := item.(map[string]any)
		want := map[string]bool{}
		for _, m := range ginParam.FindAllStringSubmatch(strings.NewReplacer("{", ":", "}", "").Replace(p), -1) {
			want[m[1]] = true
		}
		for _, m := range methods {
			op, ok := item[m].(map[string]any)
			if !ok {
				continue
			}
			where := strings.ToUpper(m) + " " + p
			id, _ := op["operationId"].(string)
			if id == "" {
				t.Errorf("%s: no operationId", where)
			} else if prev, dup := ops[id]; dup {
				t.Errorf("%s: operationId %q already used by %s", where, id, prev)
			}
			ops[id] = where
			if rs, _ := op["responses"].(map[string]any); len(rs) == 0 {
				t.Errorf("%s: no responses", where)
			}
			declared := map[string]bool{}
			for _, list := range []any{item["parameters"], op["parameters"]} {
				ps, _ := list.([]any)
				for _, prm := range ps {
					prm, err := deref(doc, prm)
					if err != nil {
						t.Error(err)
						continue
					}
					if prm["in"] == "path" {
						declared[prm["name"].(string)] = true
						if prm["required"] != true {
							t.Errorf("%s: path parameter %v must be required", where, prm["name"])
						}
					}
				}
			}
			if !sameSet(want, declared) {
				t.Errorf("%s: path parameters %v, declared %v", where, sortedKeys(want), sortedKeys(declared))
			}
			if sec, ok := op["security"].([]any); ok {
				for _, req := range sec {
					for name := range req.(map[string]any) {
						if _, ok := schemes[name]; !ok {
							t.Errorf("%s: unknown security scheme %q", where, name)
						}
					}
				}
			}
		}
	}
}

// TestOpenAPIExamplesMatchSchemas validates every example against the schema next to it, so the
// realistic examples stay true to the schemas people generate clients from.
func TestOpenAPIExamplesMatchSchemas(t *testing.T) {
	doc := spec(t)
	n := 0
	var visit func(where string, v any)
	visit = func(where string, v any) {
		switch x := v.(type) {
		case map[string]any:
			if ex, ok := x["example"]; ok {
				if s, ok := x["schema"]; ok { // a media type or parameter: example beside schema
					n++
					for _, err := range validate(doc, s, ex, where) {
						t.Error(err)
					}
				} else if _, isSchema := x["type"]; isSchema || x["allOf"] != nil || x["properties"] != nil {
					n++
					for _, err := range validate(doc, x, ex, where) {
						t.Error(err)
					}
				}
			}
			for k, c := range x {
				if k != "example" {
					visit(where+"/"+k, c)
				}
			}
		case []any:
			for i, c := range x {
				visit(fmt.Sprintf("%s/%d", where, i), c)
			}
		}
	}
	visit("#", doc)
	if n < 15 {
		t.Errorf("only %d examples checked", n)
	}
}

// TestOpenAPIMatchesGoTypes compares the main schemas' properties with the JSON fields of the Go
// types the handlers encode and decode: a field renamed in Go must be renamed in the document.
func TestOpenAPIMatchesGoTypes(t *testing.T) {
	doc := spec(t)
	types := map[string]any{
		"Error": api.Error{}, "Device": fleet.Device{}, "GroupSummary": fleet.GroupSummary{},
		"Reported": wire.Reported{}, "HostFacts": wire.HostFacts{}, "RuntimeFacts": wire.RuntimeFacts{},
		"ModelReport": wire.ModelReport{}, "SpoolReport": wire.SpoolReport{}, "Health": telemetry.Health{},
		"DesiredState": desired.State{}, "DesiredModel": desired.Model{},
		"BundleRecord": bundles.Record{}, "BundleView": api.BundleView{}, "Lineage": api.Lineage{},
		"RolloutSpec": deploy.Spec{}, "Target": deploy.Target{}, "Stage": deploy.Stage{}, "Gates": deploy.Gates{},
		"Rate": deploy.Rate{}, "Counts": deploy.Counts{}, "Decision": deploy.Decision{},
		"RolloutView": rollout.View{}, "RolloutDevice": rollout.DeviceView{},
		"GroupRollback": rollout.GroupRollback{}, "ModelRollback": rollout.ModelRollback{},
		"AuditEntry": audit.Entry{}, "TelemetryMessage": wire.Telemetry{}, "Accounting": ingest.Accounting{},
		"APIToken": auth.Token{}, "CreatedToken": api.CreatedToken{},
		"EnrollmentRequest": api.EnrollmentRequest{}, "EnrollmentCreated": api.EnrollmentCreated{},
		"EnrollRequest": enroll.Request{}, "EnrollResponse": enroll.Response{},
		"Dataset": datasets.Record{}, "CaptureRequest": api.CaptureRequest{},
	}
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	for _, name := range sortedKeys(types) {
		s, ok := schemas[name]
		if !ok {
			t.Errorf("schema %s missing", name)
			continue
		}
		props := properties(doc, s)
		fields := jsonFields(reflect.TypeOf(types[name]))
		for _, f := range sortedKeys(fields) {
			if !props[f] {
				t.Errorf("schema %s lacks property %q (field of %T)", name, f, types[name])
			}
		}
		for _, p := range sortedKeys(props) {
			if !fields[p] {
				t.Errorf("schema %s has property %q that %T does not have", name, p, types[name])
			}
		}
	}
}

func TestOpenAPIServedWithoutToken(t *testing.T) {
	h := engine(t)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/openapi.json", nil))
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("GET /api/v1/openapi.json: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	var doc map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil || doc["paths"] == nil {
		t.Fatalf("body is not the description: %v", err)
	}
	// The document is public; the API it describes is not.
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/devices", nil))
	if rec.Code != 401 {
		t.Fatalf("GET /api/v1/devices without a token: %d, want 401", rec.Code)
	}
}

// --- helpers: a small JSON-schema subset (what openapi.yaml uses) -----------------------------

func resolve(doc map[string]any, ref string) (any, error) {
	p, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, fmt.Errorf("$ref %q: only local references are used", ref)
	}
	var cur any = doc
	for _, part := range strings.Split(p, "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("$ref %q does not resolve", ref)
		}
		if cur, ok = m[part]; !ok {
			return nil, fmt.Errorf("$ref %q does not resolve", ref)
		}
	}
	return cur, nil
}

func deref(doc map[string]any, v any) (map[string]any, error) {
	for i := 0; i < 10; i++ {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("not an object: %v", v)
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return m, nil
		}
		var err error
		if v, err = resolve(doc, ref); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("$ref chain too long")
}

func walk(v any, f func(map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		f(x)
		for _, c := range x {
			walk(c, f)
		}
	case []any:
		for _, c := range x {
			walk(c, f)
		}
	}
}

// properties collects a schema's property names, through allOf.
func properties(doc map[string]any, s any) map[string]bool {
	out := map[string]bool{}
	m, err := deref(doc, s)
	if err != nil {
		return out
	}
	for k := range asMap(m["properties"]) {
		out[k] = true
	}
	for _, part := range asSlice(m["allOf"]) {
		for k := range properties(doc, part) {
			out[k] = true
		}
	}
	return out
}

func validate(doc map[string]any, schema, v any, where string) []error {
	return validateIn(doc, schema, v, where, false)
}

// validateIn checks v against schema; open is set for the parts of an allOf, which see the keys
// of the other parts (those are checked once against the union).
func validateIn(doc map[string]any, schema, v any, where string, open bool) []error {
	s, err := deref(doc, schema)
	if err != nil {
		return []error{fmt.Errorf("%s: %w", where, err)}
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{where}, args...)...))
	}
	for _, part := range asSlice(s["allOf"]) {
		errs = append(errs, validateIn(doc, part, v, where, true)...)
	}
	if m, ok := v.(map[string]any); ok && s["allOf"] != nil && !open {
		all := properties(doc, s)
		for k := range m {
			if !all[k] {
				bad("property %q is in no part of the schema", k)
			}
		}
	}
	if enum := asSlice(s["enum"]); enum != nil && !slices.Contains(enum, v) {
		bad("%v is not one of %v", v, enum)
	}
	switch s["type"] {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			bad("want an object, have %T", v)
			break
		}
		for _, r := range asSlice(s["required"]) {
			if _, ok := m[r.(string)]; !ok {
				bad("required property %q missing", r)
			}
		}
		props := asMap(s["properties"])
		for k, pv := range m {
			if ps, ok := props[k]; ok {
				errs = append(errs, validate(doc, ps, pv, where+"."+k)...)
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case bool:
				if !ap {
					bad("property %q not allowed", k)
				}
			case map[string]any:
				errs = append(errs, validate(doc, ap, pv, where+"."+k)...)
			default:
				// Open objects (no additionalProperties) with declared properties: an unknown key
				// in an example is almost always a typo.
				if props != nil && !open {
					bad("property %q is not in the schema", k)
				}
			}
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			bad("want an array, have %T", v)
			break
		}
		for i, it := range a {
			errs = append(errs, validate(doc, s["items"], it, fmt.Sprintf("%s[%d]", where, i))...)
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			bad("want a string, have %T (%v)", v, v)
		} else if s["format"] == "date-time" {
			if _, err := time.Parse(time.RFC3339, str); err != nil {
				bad("date-time %q: %v", str, err)
			}
		}
	case "integer":
		f, ok := v.(float64)
		if !ok || f != float64(int64(f)) {
			bad("want an integer, have %v", v)
		}
	case "number":
		if _, ok := v.(float64); !ok {
			bad("want a number, have %T", v)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			bad("want a boolean, have %T", v)
		}
	}
	return errs
}

// jsonFields lists the JSON keys encoding/json uses for a struct type, embedded structs included.
func jsonFields(t reflect.Type) map[string]bool {
	out := map[string]bool{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for k := range jsonFields(f.Type) {
				out[k] = true
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = true
	}
	return out
}

func asMap(v any) map[string]any { m, _ := v.(map[string]any); return m }
func asSlice(v any) []any        { s, _ := v.([]any); return s }

func sameSet(a, b map[string]bool) bool {
	return reflect.DeepEqual(a, b) || (len(a) == 0 && len(b) == 0)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
