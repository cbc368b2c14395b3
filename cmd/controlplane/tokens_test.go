package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/edgefleet/edgefleet/internal/fleettest"
)

// TestTokensCLI: an admin creates an operator token, which reads the fleet but may not list
// tokens (admin only); the admin revokes it, and it stops working.
func TestTokensCLI(t *testing.T) {
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{})
	server := "http://" + cp.Info.HTTPAddr
	admin := []string{"--server", server, "--token", cp.Token}

	out := mustCmd(t, append(admin, "tokens", "create", "--name", "ci-deployer", "--role", "operator")...)
	var created struct{ ID, Name, Role, Token string }
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.ID == "" || created.Token == "" || created.Role != "operator" {
		t.Fatalf("tokens create printed %s (%v)", out, err)
	}
	if out := mustCmd(t, append(admin, "tokens", "list")...); !strings.Contains(out, created.ID) || strings.Contains(out, created.Token) {
		t.Fatalf("tokens list: %s", out)
	}
	op := []string{"--server", server, "--token", created.Token}
	mustCmd(t, append(op, "devices", "list")...)
	if _, errs, code := cmd(t, append(op, "tokens", "list")...); code == 0 || !strings.Contains(errs, "admin role") {
		t.Fatalf("operator listing tokens: exit %d, %s", code, errs)
	}
	if _, errs, code := cmd(t, append(admin, "tokens", "create", "--name", "x", "--role", "root")...); code == 0 || !strings.Contains(errs, "viewer, operator or admin") {
		t.Fatalf("bad role: exit %d, %s", code, errs)
	}
	mustCmd(t, append(admin, "tokens", "revoke", created.ID)...)
	if _, errs, code := cmd(t, append(op, "devices", "list")...); code == 0 || !strings.Contains(errs, "HTTP 401") {
		t.Fatalf("revoked token: exit %d, %s", code, errs)
	}
}
