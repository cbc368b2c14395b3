package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/internal/cli"
)

// client is the operator CLI's view of the REST API.
type client struct {
	server string
	token  string
	out    io.Writer
}

func newClient(args []string, stdout, stderr io.Writer) (*client, []string, error) {
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", "http://127.0.0.1:8080", "control plane URL")
	token := fs.String("token", "", "API token (default: ./var/controlplane/admin.token when present)")
	if err := cli.Parse(fs, args); err != nil {
		return nil, nil, err
	}
	tok := *token
	if tok == "" {
		if b, err := os.ReadFile("var/controlplane/admin.token"); err == nil {
			tok = strings.TrimSpace(string(b))
		}
	}
	if tok == "" {
		return nil, nil, errors.New("no API token: pass --token or set EDGEFLEET_TOKEN")
	}
	return &client{server: strings.TrimRight(*server, "/"), token: tok, out: stdout}, fs.Args(), nil
}

// do sends a request and prints the JSON answer indented; an error status becomes an error with
// the server's message.
func (c *client) do(method, path string, body io.Reader, contentType string) error {
	req, err := http.NewRequest(method, c.server+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	hc := &http.Client{Timeout: 10 * time.Minute}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w (is the control plane running at %s?)", method, path, err, c.server)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode >= 300 {
		var e struct{ Error, Code string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s (%s, HTTP %d)", e.Error, e.Code, resp.StatusCode)
		}
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	var v any
	if json.Unmarshal(b, &v) == nil {
		enc := json.NewEncoder(c.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	_, err = c.out.Write(b)
	return err
}

func (c *client) jsonBody(method, path string, v any) error {
	b, _ := json.Marshal(v)
	return c.do(method, path, bytes.NewReader(b), "application/json")
}

const clientUsage = `operator commands (against a running control plane):
  controlplane [--server URL --token T] devices list [--group G] | devices show ID | devices group ID GROUP
  controlplane ... groups list | groups show GROUP | groups assign GROUP BUNDLE
  controlplane ... groups set GROUP [--production=true|false] [--capture=true|false --retention 720h --max-samples N]
  controlplane ... bundles push FILE | bundles list | bundles show ID | bundles stage ID staging|production|archived
  controlplane ... desired set DEVICE BUNDLE
  controlplane ... rollouts create|list|show|devices|pause|resume|abort|approve|rollback ... | groups rollback GROUP [--model M]
  controlplane ... tokens create --name NAME --role viewer|operator|admin | tokens list | tokens revoke ID
  controlplane ... enrollments create [--group G] [--uses N] [--expires-in 24h] | devices revoke ID
`

func runClient(args []string, stdout, stderr io.Writer) error {
	c, rest, err := newClient(args, stdout, stderr)
	if err != nil {
		return err
	}
	if len(rest) < 2 {
		return errors.New(strings.TrimSpace(clientUsage))
	}
	noun, verb, rest := rest[0], rest[1], rest[2:]
	need := func(n int) error {
		if len(rest) != n {
			return fmt.Errorf("%s %s: wrong number of arguments\n%s", noun, verb, strings.TrimSpace(clientUsage))
		}
		return nil
	}
	if handled, err := c.rolloutCommand(noun, verb, rest, stderr); handled { // cmd/controlplane/rollouts.go
		return err
	}
	if handled, err := c.tokenCommand(noun, verb, rest, stderr); handled { // cmd/controlplane/tokens.go
		return err
	}
	esc := url.PathEscape
	switch noun + " " + verb {
	case "devices list":
		fs := flag.NewFlagSet("devices list", flag.ContinueOnError)
		fs.SetOutput(stderr)
		group := fs.String("group", "", "only this group")
		if err := fs.Parse(rest); err != nil {
			return err
		}
		q := ""
		if *group != "" {
			q = "?group=" + url.QueryEscape(*group)
		}
		return c.do("GET", "/api/v1/devices"+q, nil, "")
	case "devices show":
		if err := need(1); err != nil {
			return err
		}
		return c.do("GET", "/api/v1/devices/"+esc(rest[0]), nil, "")
	case "devices group":
		if err := need(2); err != nil {
			return err
		}
		return c.jsonBody("PUT", "/api/v1/devices/"+esc(rest[0])+"/group", map[string]string{"group": rest[1]})
	case "groups list":
		return c.do("GET", "/api/v1/groups", nil, "")
	case "groups show":
		if err := need(1); err != nil {
			return err
		}
		return c.do("GET", "/api/v1/groups/"+esc(rest[0]), nil, "")
	case "groups assign":
		if err := need(2); err != nil {
			return err
		}
		return c.jsonBody("PUT", "/api/v1/groups/"+esc(rest[0])+"/desired", map[string]string{"bundle": rest[1]})
	case "groups set":
		if len(rest) < 1 || strings.HasPrefix(rest[0], "-") {
			return fmt.Errorf("groups set: name the group first\n%s", strings.TrimSpace(clientUsage))
		}
		fs := flag.NewFlagSet("groups set", flag.ContinueOnError)
		fs.SetOutput(stderr)
		production := fs.String("production", "", "true: only bundles in the production stage may go to this group")
		capture := fs.String("capture", "", "true: devices of this group may capture samples for retraining")
		retention := fs.String("retention", "", "how long captured samples are kept (e.g. 720h)")
		maxSamples := fs.Int("max-samples", 0, "samples one capture may take")
		if err := fs.Parse(rest[1:]); err != nil {
			return err
		}
		body := map[string]any{}
		if *production != "" {
			v, err := strconv.ParseBool(*production)
			if err != nil {
				return fmt.Errorf("groups set: --production must be true or false")
			}
			body["production"] = v
		}
		if *capture != "" || *retention != "" || *maxSamples != 0 {
			v, err := strconv.ParseBool(cmp.Or(*capture, "true"))
			if err != nil {
				return fmt.Errorf("groups set: --capture must be true or false")
			}
			body["capture"] = map[string]any{"enabled": v, "retention": *retention, "max_samples": *maxSamples}
		}
		if len(body) == 0 {
			return fmt.Errorf("groups set: nothing to change; give --production or --capture")
		}
		return c.jsonBody("PUT", "/api/v1/groups/"+esc(rest[0]), body)
	case "desired set":
		if err := need(2); err != nil {
			return err
		}
		return c.jsonBody("PUT", "/api/v1/devices/"+esc(rest[0])+"/desired", map[string]string{"bundle": rest[1]})
	case "bundles push":
		if err := need(1); err != nil {
			return err
		}
		f, err := os.Open(rest[0])
		if err != nil {
			return err
		}
		defer f.Close()
		return c.do("POST", "/api/v1/bundles", f, "application/x-tar")
	case "bundles list":
		return c.do("GET", "/api/v1/bundles", nil, "")
	case "bundles show":
		if err := need(1); err != nil {
			return err
		}
		return c.do("GET", "/api/v1/bundles/"+esc(rest[0]), nil, "")
	case "enrollments create":
		fs := flag.NewFlagSet("enrollments create", flag.ContinueOnError)
		fs.SetOutput(stderr)
		group := fs.String("group", "", "group the enrolled devices join at first registration")
		uses := fs.Int("uses", 1, "how many devices may redeem the token")
		expires := fs.String("expires-in", "24h", "how long the token is valid")
		if err := fs.Parse(rest); err != nil {
			return err
		}
		return c.jsonBody("POST", "/api/v1/enrollments", map[string]any{"group": *group, "uses": *uses, "expires_in": *expires})
	case "devices revoke":
		if err := need(1); err != nil {
			return err
		}
		return c.do("POST", "/api/v1/devices/"+esc(rest[0])+"/revoke", nil, "")
	case "bundles stage":
		if err := need(2); err != nil {
			return err
		}
		return c.jsonBody("PUT", "/api/v1/bundles/"+esc(rest[0])+"/stage", map[string]string{"stage": rest[1]})
	}
	return fmt.Errorf("unknown command %q\n%s", noun+" "+verb, strings.TrimSpace(clientUsage))
}
