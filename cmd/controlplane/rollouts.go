package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/deploy"
	"github.com/edgefleet/edgefleet/internal/cli"
)

const rolloutsUsage = `rollouts (against a running control plane):
  controlplane ... rollouts create --bundle REF --groups a,b [--selector k=v] [--stages '1,10%:5m,100%'] [--bake 5m]
                                   [--on-failure rollback|pause] [--spec FILE.json]
  controlplane ... rollouts list | rollouts show ID | rollouts devices ID
  controlplane ... rollouts pause|resume|abort|approve|rollback ID [--reason TEXT]
  controlplane ... groups rollback GROUP [--model M]
--stages: comma-separated stages, each SIZE[:BAKE][:approve]; SIZE is a device count or a
percentage of the target (cumulative), e.g. '1:30s,10%:5m:approve,100%'.`

// rolloutCommand runs the rollout verbs; handled is false for any other command.
func (c *client) rolloutCommand(noun, verb string, rest []string, stderr io.Writer) (handled bool, err error) {
	esc := url.PathEscape
	switch {
	case noun == "groups" && verb == "rollback":
		fs := flag.NewFlagSet("groups rollback", flag.ContinueOnError)
		fs.SetOutput(stderr)
		model := fs.String("model", "", "only this model (default: every model of the group)")
		args, err := parseInterleaved(fs, rest)
		if err != nil {
			return true, err
		}
		if len(args) != 1 {
			return true, fmt.Errorf("groups rollback: want one GROUP\n%s", rolloutsUsage)
		}
		body := map[string]string{}
		if *model != "" {
			body["model"] = *model
		}
		return true, c.jsonBody("POST", "/api/v1/groups/"+esc(args[0])+"/rollback", body)
	case noun != "rollouts":
		return false, nil
	}
	switch verb {
	case "create":
		spec, err := parseCreate(rest, stderr)
		if err != nil {
			return true, err
		}
		return true, c.jsonBody("POST", "/api/v1/rollouts", spec)
	case "list":
		return true, c.do("GET", "/api/v1/rollouts", nil, "")
	case "show", "devices":
		if len(rest) != 1 {
			return true, fmt.Errorf("rollouts %s: want one ID\n%s", verb, rolloutsUsage)
		}
		path := "/api/v1/rollouts/" + esc(rest[0])
		if verb == "devices" {
			path += "/devices"
		}
		return true, c.do("GET", path, nil, "")
	case "pause", "resume", "abort", "approve", "rollback":
		fs := flag.NewFlagSet("rollouts "+verb, flag.ContinueOnError)
		fs.SetOutput(stderr)
		reason := fs.String("reason", "", "why (recorded in the decision log and the audit log)")
		args, err := parseInterleaved(fs, rest)
		if err != nil {
			return true, err
		}
		if len(args) != 1 {
			return true, fmt.Errorf("rollouts %s: want one ID\n%s", verb, rolloutsUsage)
		}
		body := map[string]string{}
		if *reason != "" {
			body["reason"] = *reason
		}
		return true, c.jsonBody("POST", "/api/v1/rollouts/"+esc(args[0])+"/"+verb, body)
	}
	return true, fmt.Errorf("unknown command %q\n%s", noun+" "+verb, rolloutsUsage)
}

// parseInterleaved lets flags come before or after the positional arguments ("pause ID --reason x").
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := cli.Parse(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func parseCreate(args []string, stderr io.Writer) (deploy.Spec, error) {
	fs := flag.NewFlagSet("rollouts create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cli.Usage(fs, "controlplane rollouts create --bundle REF --groups a,b [--selector k=v] [--stages '1,10%:5m,100%'] [--spec FILE.json]")
	specFile := fs.String("spec", "", "the whole rollout as JSON (INTERFACE.md); flags given as well override its fields")
	bundleRef := fs.String("bundle", "", "bundle id or name@version")
	var groups cli.Strings
	fs.Var(&groups, "groups", "target groups, comma-separated or repeated")
	selector := fs.String("selector", "", "label selector, e.g. arch=arm64,site!=lab")
	stages := fs.String("stages", "", "stages SIZE[:BAKE][:approve],... (default '1,10%,100%' when no --spec)")
	bake := fs.Duration("bake", 5*time.Minute, "bake of the stages that name none")
	onFailure := fs.String("on-failure", "", "what a failed gate does: rollback (default) or pause")
	if err := cli.Parse(fs, args); err != nil {
		return deploy.Spec{}, err
	}
	if fs.NArg() > 0 {
		return deploy.Spec{}, fmt.Errorf("rollouts create: unexpected arguments %v", fs.Args())
	}
	var spec deploy.Spec
	if *specFile != "" {
		b, err := os.ReadFile(*specFile)
		if err != nil {
			return spec, err
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&spec); err != nil {
			return spec, fmt.Errorf("read %s: %w", *specFile, err)
		}
	}
	if *bundleRef != "" {
		spec.Bundle = *bundleRef
	}
	if len(groups) > 0 {
		spec.Target.Groups = groups
	}
	if *selector != "" {
		spec.Target.Selector = *selector
	}
	if *onFailure != "" {
		spec.OnFailure = *onFailure
	}
	if *stages != "" || len(spec.Stages) == 0 {
		s := *stages
		if s == "" {
			s = "1,10%,100%"
		}
		st, err := parseStages(s, *bake)
		if err != nil {
			return spec, err
		}
		spec.Stages = st
	}
	if spec.Bundle == "" {
		return spec, errors.New("rollouts create: --bundle is required")
	}
	if len(spec.Target.Groups) == 0 && spec.Target.Selector == "" {
		return spec, errors.New("rollouts create: --groups or --selector is required")
	}
	return spec, nil
}

// parseStages reads "1:30s,10%:5m:approve,100%".
func parseStages(s string, defBake time.Duration) ([]deploy.Stage, error) {
	var out []deploy.Stage
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		parts := strings.Split(item, ":")
		var st deploy.Stage
		size := parts[0]
		if p, ok := strings.CutSuffix(size, "%"); ok {
			v, err := strconv.ParseFloat(p, 64)
			if err != nil {
				return nil, fmt.Errorf("stage %q: %q is not a percentage", item, size)
			}
			st.Percent = v
		} else {
			v, err := strconv.Atoi(size)
			if err != nil {
				return nil, fmt.Errorf("stage %q: %q is neither a device count nor a percentage", item, size)
			}
			st.Devices = v
		}
		st.Bake = deploy.Duration(defBake)
		for _, p := range parts[1:] {
			if p == "approve" || p == "approval" {
				st.Approval = true
				continue
			}
			d, err := time.ParseDuration(p)
			if err != nil {
				return nil, fmt.Errorf("stage %q: %q is neither a bake duration nor 'approve'", item, p)
			}
			st.Bake = deploy.Duration(d)
		}
		out = append(out, st)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--stages %q names no stage", s)
	}
	return out, nil
}
