// Package edgefleet_test checks the import graph, so a layering mistake fails the build instead
// of growing quietly (STYLE.md, tailscale's deptest).
package edgefleet_test

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/edgefleet/edgefleet"

type pkg struct {
	ImportPath string
	Imports    []string
}

func listPackages(t *testing.T) []pkg {
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports", "./...")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(out)
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

func under(path, root string) bool { return path == root || strings.HasPrefix(path, root+"/") }

// rule reports whether pkg (importing imp) breaks a layering rule, and which.
func rule(p, imp string) string {
	local := func(r string) string { return mod + "/" + r }
	// Test helpers and benchmark programs may start real parts (a broker) themselves.
	testHelper := under(p, local("internal/fleettest")) || under(p, local("internal/brokertest")) || under(p, local("bench"))
	switch {
	case under(imp, local("cmd")):
		return "nothing imports cmd/..."
	case under(p, local("agent")) && under(imp, local("controlplane")):
		return "agent never imports controlplane"
	case under(p, local("controlplane")) && under(imp, local("agent")):
		return "controlplane never imports agent"
	case under(p, local("cmd/agent")) && under(imp, local("controlplane")):
		return "cmd/agent is the agent's wiring only"
	case under(p, local("cmd/controlplane")) && under(imp, local("agent")):
		return "cmd/controlplane is the control plane's wiring only"
	case (under(p, local("ota")) || under(p, local("deploy")) || under(p, local("telemetry")) || (under(p, local("internal")) && !testHelper)) &&
		(under(imp, local("agent")) || under(imp, local("controlplane"))):
		return "ota, deploy, telemetry and internal are libraries: they import neither agent nor controlplane"
	case under(p, local("deploy")) && (imp == "net/http" || under(imp, "github.com/gin-gonic/gin") || under(imp, "github.com/eclipse/paho.mqtt.golang") || under(imp, "github.com/mochi-mqtt/server/v2")):
		return "deploy is pure logic: no MQTT, no HTTP"
	case under(imp, "go.etcd.io/bbolt") && !strings.HasSuffix(p, "/store"):
		return "only store packages import bbolt"
	case under(imp, "github.com/gin-gonic/gin") && !under(p, local("controlplane/api")):
		return "only controlplane/api imports gin"
	case under(imp, "github.com/yalue/onnxruntime_go") && p != local("internal/onnxrt"):
		return "only internal/onnxrt imports onnxruntime_go"
	case under(imp, "github.com/mochi-mqtt/server/v2") && !under(p, local("controlplane/broker")) && !testHelper:
		return "only controlplane/broker embeds the broker"
	case under(imp, "go.etcd.io/etcd") && !under(p, local("controlplane/store/etcdstore")) && !under(p, local("controlplane/leader")) && !under(p, local("controlplane/shards")):
		return "only controlplane/store/etcdstore, controlplane/leader and controlplane/shards speak to etcd"
	}
	return ""
}

func TestImportRules(t *testing.T) {
	for _, p := range listPackages(t) {
		for _, imp := range p.Imports {
			if why := rule(p.ImportPath, imp); why != "" {
				t.Errorf("%s imports %s: %s", p.ImportPath, imp, why)
			}
		}
	}
}

// The rules themselves must be able to fail.
func TestImportRulesCatchViolations(t *testing.T) {
	bad := [][2]string{
		{mod + "/agent", mod + "/controlplane/store"},
		{mod + "/controlplane/fleet", mod + "/agent"},
		{mod + "/ota/bundle", mod + "/controlplane"},
		{mod + "/deploy", "net/http"},
		{mod + "/controlplane/fleet", "go.etcd.io/bbolt"},
		{mod + "/agent", "github.com/gin-gonic/gin"},
		{mod + "/agent", "github.com/yalue/onnxruntime_go"},
		{mod + "/controlplane", mod + "/cmd/agent"},
	}
	for _, b := range bad {
		if rule(b[0], b[1]) == "" {
			t.Errorf("%s importing %s was not flagged", b[0], b[1])
		}
	}
	if why := rule(mod+"/controlplane/store", "go.etcd.io/bbolt"); why != "" {
		t.Errorf("store importing bbolt flagged: %s", why)
	}
}
