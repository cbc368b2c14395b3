package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"

	"github.com/edgefleet/edgefleet/internal/cli"
)

const tokensUsage = `tokens (admin token needed):
  controlplane ... tokens create --name NAME --role viewer|operator|admin   # prints the token once
  controlplane ... tokens list | tokens revoke ID`

// tokenCommand runs the API token verbs; handled is false for any other command.
func (c *client) tokenCommand(noun, verb string, rest []string, stderr io.Writer) (handled bool, err error) {
	if noun != "tokens" {
		return false, nil
	}
	switch verb {
	case "create":
		fs := flag.NewFlagSet("tokens create", flag.ContinueOnError)
		fs.SetOutput(stderr)
		cli.Usage(fs, "controlplane tokens create --name NAME --role viewer|operator|admin")
		name := fs.String("name", "", "who or what uses the token (shown in lists and the audit log)")
		role := fs.String("role", "", "viewer (reads), operator (also changes the fleet, runs rollouts) or admin (everything)")
		args, err := parseInterleaved(fs, rest)
		if err != nil {
			return true, err
		}
		if len(args) != 0 || *name == "" || *role == "" {
			return true, errors.New("tokens create: give --name and --role, and nothing else\n" + tokensUsage)
		}
		return true, c.jsonBody("POST", "/api/v1/tokens", map[string]string{"name": *name, "role": *role})
	case "list":
		if len(rest) != 0 {
			return true, errors.New("tokens list takes no arguments")
		}
		return true, c.do("GET", "/api/v1/tokens", nil, "")
	case "revoke":
		if len(rest) != 1 {
			return true, fmt.Errorf("tokens revoke: want one token ID (from tokens list; not the token itself)\n%s", tokensUsage)
		}
		return true, c.do("DELETE", "/api/v1/tokens/"+url.PathEscape(rest[0]), nil, "")
	}
	return true, fmt.Errorf("unknown command %q\n%s", "tokens "+verb, tokensUsage)
}
