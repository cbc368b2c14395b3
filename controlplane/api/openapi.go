package api

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/gin-gonic/gin"
	"gopkg.in/yaml.v3"
)

// openapiYAML is the API's description. It is kept as YAML because people review and edit it
// (comments, anchors for repeated answers); clients get JSON.
//
//go:embed openapi.yaml
var openapiYAML []byte

var (
	openapiOnce sync.Once
	openapiJSON []byte
	openapiErr  error
)

// OpenAPI returns the OpenAPI 3 description of this API as indented JSON, with the keys in the
// order the YAML source has them (so the document reads top-down: info, paths, components).
func OpenAPI() ([]byte, error) {
	openapiOnce.Do(func() {
		var doc yaml.Node
		if err := yaml.Unmarshal(openapiYAML, &doc); err != nil {
			openapiErr = fmt.Errorf("openapi.yaml: %w", err)
			return
		}
		var buf bytes.Buffer
		if err := nodeJSON(&buf, &doc); err != nil {
			openapiErr = fmt.Errorf("openapi.yaml: %w", err)
			return
		}
		var out bytes.Buffer
		if err := json.Indent(&out, buf.Bytes(), "", "  "); err != nil {
			openapiErr = fmt.Errorf("openapi.yaml as JSON: %w", err)
			return
		}
		openapiJSON = out.Bytes()
	})
	return openapiJSON, openapiErr
}

// serveOpenAPI answers GET /api/v1/openapi.json. It is public: the document only restates what
// INTERFACE.md publishes, and tools that generate clients fetch it before they have a token.
func serveOpenAPI(c *gin.Context) {
	b, err := OpenAPI()
	if err != nil {
		fail(c, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	c.Data(http.StatusOK, "application/json; charset=utf-8", b)
}

// nodeJSON writes a YAML node as JSON, resolving aliases and keeping mapping order.
func nodeJSON(buf *bytes.Buffer, n *yaml.Node) error {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) != 1 {
			return fmt.Errorf("line %d: want one document", n.Line)
		}
		return nodeJSON(buf, n.Content[0])
	case yaml.AliasNode:
		return nodeJSON(buf, n.Alias)
	case yaml.MappingNode:
		buf.WriteByte('{')
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: mapping keys must be scalars", k.Line)
			}
			// JSON objects with repeated keys are read differently by different parsers.
			if seen[k.Value] {
				return fmt.Errorf("line %d: key %q repeated", k.Line, k.Value)
			}
			seen[k.Value] = true
			if i > 0 {
				buf.WriteByte(',')
			}
			kb, _ := json.Marshal(k.Value)
			buf.Write(kb)
			buf.WriteByte(':')
			if err := nodeJSON(buf, n.Content[i+1]); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	case yaml.SequenceNode:
		buf.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := nodeJSON(buf, c); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case yaml.ScalarNode:
		return scalarJSON(buf, n)
	default:
		return fmt.Errorf("line %d: unsupported YAML node", n.Line)
	}
	return nil
}

func scalarJSON(buf *bytes.Buffer, n *yaml.Node) error {
	switch n.ShortTag() {
	case "!!null":
		buf.WriteString("null")
	case "!!bool":
		b, err := strconv.ParseBool(n.Value)
		if err != nil {
			// YAML 1.1 spellings (yes/on) are not JSON booleans; refuse rather than guess.
			return fmt.Errorf("line %d: boolean %q: use true or false", n.Line, n.Value)
		}
		buf.WriteString(strconv.FormatBool(b))
	case "!!int", "!!float":
		// Re-encode through float64 so YAML-only spellings (0x1F, .inf) fail here, not in a client.
		var v any
		if err := yaml.Unmarshal([]byte(n.Value), &v); err != nil {
			return fmt.Errorf("line %d: number %q: %w", n.Line, n.Value, err)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("line %d: number %q: %w", n.Line, n.Value, err)
		}
		buf.Write(b)
	default:
		b, _ := json.Marshal(n.Value)
		buf.Write(b)
	}
	return nil
}
