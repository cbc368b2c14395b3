package controlplane_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgefleet/edgefleet/controlplane/enroll"
	"github.com/edgefleet/edgefleet/internal/brokertest"
	wenroll "github.com/edgefleet/edgefleet/internal/enroll"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/internal/mqttc"
	"github.com/edgefleet/edgefleet/internal/wire"
	"github.com/edgefleet/edgefleet/ota/sign"
	"github.com/edgefleet/edgefleet/ota/trust"
)

// trustSetup makes a root key, a control key and a trust document v1 naming a release key and
// the control key; it returns the trust document's path and the folder holding the keys.
func trustSetup(t *testing.T, k fleettest.Keys) (doc, dir string) {
	t.Helper()
	dir = t.TempDir()
	for _, role := range []trust.Role{trust.RoleRoot, trust.RoleControl} {
		if _, _, _, err := trust.GenerateKeyFiles(dir, role); err != nil {
			t.Fatal(err)
		}
	}
	doc = filepath.Join(dir, "trust-v1.json")
	if _, err := trust.SignTrustFile(t.Context(), trust.SignFileOptions{Version: 1, RootKeys: []string{filepath.Join(dir, "root.key")},
		ReleasePubs: []string{k.PubPath}, ControlPubs: []string{filepath.Join(dir, "control.pub")}, Out: doc}); err != nil {
		t.Fatal(err)
	}
	return doc, dir
}

func createToken(t *testing.T, cp *fleettest.ControlPlane, group string, uses int, expires string) string {
	t.Helper()
	var out struct{ Token string }
	code, body := cp.Do("POST", "/api/v1/enrollments", map[string]any{"group": group, "uses": uses, "expires_in": expires}, &out)
	if code != 201 || !strings.HasPrefix(out.Token, wenroll.Prefix) {
		t.Fatalf("create enrollment: %d %s", code, body)
	}
	return out.Token
}

// redeem calls POST /api/v1/enroll as a device would: no API token.
func redeem(t *testing.T, cp *fleettest.ControlPlane, token, device string) (int, wenroll.Response) {
	t.Helper()
	b, _ := json.Marshal(wenroll.Request{Token: token, Device: device})
	resp, err := http.Post("http://"+cp.Info.HTTPAddr+wenroll.Path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r wenroll.Response
	json.NewDecoder(resp.Body).Decode(&r)
	return resp.StatusCode, r
}

// mqttDevice is a bare MQTT client standing in for a device, to probe the broker's policy.
type mqttDevice struct {
	id   string
	c    paho.Client
	msgs chan paho.Message
	lost chan error
}

func dial(url, id, user, pass string) (*mqttDevice, error) {
	d := &mqttDevice{id: id, msgs: make(chan paho.Message, 64), lost: make(chan error, 1)}
	o := paho.NewClientOptions().AddBroker(strings.Replace(url, "mqtt://", "tcp://", 1)).SetClientID(id).
		SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetConnectRetry(false).SetCleanSession(true).
		SetConnectTimeout(10 * time.Second)
	o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { d.msgs <- m })
	o.SetConnectionLostHandler(func(_ paho.Client, err error) { d.lost <- err })
	d.c = paho.NewClient(o)
	tok := d.c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return d, nil
}

func mustDial(t *testing.T, url, id, user, pass string) *mqttDevice {
	t.Helper()
	d, err := dial(url, id, user, pass)
	if err != nil {
		t.Fatalf("%s connects with its own credentials: %v", id, err)
	}
	t.Cleanup(func() { d.c.Disconnect(0) })
	return d
}

func (d *mqttDevice) publish(t *testing.T, topic string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	tok := d.c.Publish(topic, 1, true, b)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s publish %s: %v", d.id, topic, tok.Error())
	}
}

// subscribe returns the broker's SUBACK code for the filter (0x80: refused).
func (d *mqttDevice) subscribe(t *testing.T, filter string) byte {
	t.Helper()
	tok := d.c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) { d.msgs <- m })
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s subscribe %s: %v", d.id, filter, tok.Error())
	}
	return tok.(*paho.SubscribeToken).Result()[filter]
}

// checkACL: device A reads its own desired state and not B's, and cannot publish as B, on
// whichever broker the control plane uses (positive control on every check).
func checkACL(t *testing.T, cp *fleettest.ControlPlane, k fleettest.Keys, url string, a, b wenroll.Response, strictSuback bool) {
	t.Helper()
	tp := wire.NewTopics(a.Prefix)
	da := mustDial(t, url, a.Device, a.Username, a.Password)
	db := mustDial(t, url, b.Device, b.Username, b.Password)
	da.publish(t, tp.Status(a.Device), wire.Status{State: wire.StateOnline, Session: 1, At: time.Now().UTC()})
	db.publish(t, tp.Status(b.Device), wire.Status{State: wire.StateOnline, Session: 1, At: time.Now().UTC()})
	fleettest.Eventually(t, 30*time.Second, "both devices registered online", func() bool {
		ds := cp.Devices()
		return ds[a.Device].Online && ds[b.Device].Online
	})
	bundle, _ := fleettest.BuildBundle(t, k, "hello_deepa.onnx", "wake", "1.0.0")
	cp.Push(bundle)
	assign(t, cp, a.Device, "wake@1.0.0", "0s")
	assign(t, cp, b.Device, "wake@1.0.0", "0s")

	// Read: subscriptions to B's desired state (by name and by wildcard) deliver nothing, while
	// A's own arrives. The broker answers each SUBSCRIBE and sends its retained messages in order
	// on the one connection, so once A's own has arrived, B's would have come before it. mochi
	// also refuses the subscription in the SUBACK (0x80); Mosquitto 2.0 grants it and filters
	// on delivery.
	for _, f := range []string{tp.Desired(b.Device), tp.Prefix + "/devices/+/desired"} {
		if code := da.subscribe(t, f); strictSuback && code != 0x80 {
			t.Errorf("A subscribing to %s: SUBACK %#x, want 0x80", f, code)
		}
	}
	if code := da.subscribe(t, tp.Desired(a.Device)); code != 1 {
		t.Errorf("A subscribing to its own desired state: SUBACK %#x, want 1", code)
	}
	for own := false; !own; {
		select {
		case m := <-da.msgs:
			own = m.Topic() == tp.Desired(a.Device)
			if !own {
				t.Errorf("A received %s", m.Topic())
			}
		case <-time.After(30 * time.Second):
			t.Fatal("A did not receive its own retained desired state")
		}
	}

	// Write: A forges B's status, then publishes its own with a marker session. The broker has
	// handled the forgery before A's next publish, so once the control plane has A's, it has
	// seen (or never got) the forgery. mochi answers a denied publish by closing the connection
	// (MQTT 3.1.1 allows that or a silent drop, which Mosquitto does): A then reconnects.
	b99, _ := json.Marshal(wire.Status{State: wire.StateOffline, Session: 99, At: time.Now().UTC()})
	if tok := da.c.Publish(tp.Status(b.Device), 1, true, b99); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		da = mustDial(t, url, a.Device, a.Username, a.Password)
	}
	da.publish(t, tp.Status(a.Device), wire.Status{State: wire.StateOnline, Session: 7, At: time.Now().UTC()})
	fleettest.Eventually(t, 30*time.Second, "A's own status with session 7 (positive control)", func() bool {
		return cp.Devices()[a.Device].Session == 7
	})
	if d := cp.Devices()[b.Device]; !d.Online || d.Session != 1 {
		t.Errorf("A published as B: B is now online=%v session=%d", d.Online, d.Session)
	}
}

// TestEnrollE2E: with device credentials required on the embedded broker, an agent enrolled
// with a token connects under its own credentials in the token's group; a used single-use token,
// an expired one, a forged one and one naming another root are refused (the last by the agent,
// which saves nothing); the ACL holds per device; a revoked device is disconnected and refused.
func TestEnrollE2E(t *testing.T) {
	k := fleettest.NewKeys(t)
	doc, dir := trustSetup(t, k)
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustDoc: doc, ControlKey: filepath.Join(dir, "control.key"), RequireDeviceCredentials: true})

	// Creating tokens and revoking are admin calls; redeeming needs no API token (tested below).
	good := cp.Token
	cp.Token = "wrong"
	for _, path := range []string{"/api/v1/enrollments", "/api/v1/devices/enr-1/revoke"} {
		if code, _ := cp.Do("POST", path, map[string]any{"uses": 1}, nil); code != 401 {
			t.Errorf("POST %s without the admin token: %d, want 401", path, code)
		}
	}
	cp.Token = good

	// Enrollment by token; the answer is kept 0600 and reused on restart.
	tok1 := createToken(t, cp, "line-a", 1, "1h")
	ag := fleettest.StartAgent(t, cp.BrokerURL(), "enr-1", "", "--enroll", tok1)
	fleettest.Eventually(t, 60*time.Second, "enrolled agent online in the token's group", func() bool {
		d := cp.Devices()["enr-1"]
		return d.Online && d.Group == "line-a"
	})
	for _, f := range []string{"credentials.json", "trust.json"} {
		fi, err := os.Stat(filepath.Join(ag.DataDir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, fi, err)
		}
	}
	ag.Stop()
	ag.Start(t)
	fleettest.Eventually(t, 60*time.Second, "re-run with --enroll on an enrolled data folder reconnects", func() bool {
		return strings.Contains(ag.Log(), "already enrolled") && cp.Devices()["enr-1"].Online
	})

	// Refused enrollments: the agent exits with the control plane's reason and saves nothing.
	multi := createToken(t, cp, "", 10, "1h")
	mt, _ := wenroll.Parse(multi)
	other, err := sign.LoadVerifier(k.PubPath) // any key but the root
	if err != nil {
		t.Fatal(err)
	}
	wrongRoot := wenroll.Token{URL: mt.URL, ID: mt.ID, Secret: mt.Secret, RootSHA256: other.KeyID()}.Encode()
	forged := wenroll.Token{URL: mt.URL, ID: mt.ID, Secret: "AAAA", RootSHA256: mt.RootSHA256}.Encode()
	expired := createToken(t, cp, "", 1, "1ms")
	for _, c := range []struct{ name, id, token, want string }{
		{"used single-use token", "enr-2", tok1, "token_used_up"},
		{"expired token", "enr-3", expired, "token_expired"},
		{"forged secret", "enr-4", forged, "invalid_token"},
		{"token naming another root", "enr-5", wrongRoot, "REFUSED the control plane's trust document"},
	} {
		a := fleettest.StartAgent(t, cp.BrokerURL(), c.id, "", "--enroll", c.token)
		if !a.WaitExit(60 * time.Second) {
			t.Fatalf("%s: agent kept running", c.name)
		}
		if !strings.Contains(a.Log(), c.want) {
			t.Errorf("%s: agent log lacks %q:\n%s", c.name, c.want, a.Log())
		}
		if _, err := os.Stat(filepath.Join(a.DataDir, "credentials.json")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: credentials saved (%v)", c.name, err)
		}
	}

	// The broker: no credentials, wrong password, or another device's password: refused.
	ca, cb := redeemOK(t, cp, multi, "acl-a"), redeemOK(t, cp, multi, "acl-b")
	for _, c := range []struct{ name, id, user, pass string }{
		{"never enrolled, no credentials", "enr-x", "", ""},
		{"wrong password", "acl-a", "acl-a", "guess"},
		{"B's credentials under A's id", "acl-a", "acl-b", cb.Password},
		{"A's username, B's password", "acl-a", "acl-a", cb.Password},
	} {
		if d, err := dial(cp.BrokerURL(), c.id, c.user, c.pass); err == nil {
			d.c.Disconnect(0)
			t.Errorf("%s: connected", c.name)
		}
	}
	checkACL(t, cp, k, cp.BrokerURL(), ca, cb, true)

	// Revocation: the live session is cut, the device goes offline, reconnects are refused;
	// the agent process too.
	probe := mustDial(t, cp.BrokerURL(), "acl-a", ca.Username, ca.Password)
	for _, dev := range []string{"acl-a", "enr-1"} {
		if code, body := cp.Do("POST", "/api/v1/devices/"+dev+"/revoke", nil, nil); code != 200 {
			t.Fatalf("revoke %s: %d %s", dev, code, body)
		}
	}
	select {
	case <-probe.lost:
	case <-time.After(30 * time.Second):
		t.Fatal("revoked device's live session was not cut")
	}
	fleettest.Eventually(t, 30*time.Second, "revoked agent offline (its Last Will)", func() bool {
		return !cp.Devices()["enr-1"].Online
	})
	if d, err := dial(cp.BrokerURL(), "acl-a", ca.Username, ca.Password); err == nil {
		d.c.Disconnect(0)
		t.Error("revoked device reconnected")
	}
	fleettest.Eventually(t, 60*time.Second, "revoked agent refused on reconnect", func() bool {
		return strings.Contains(ag.Log(), "cannot reach broker")
	})
	var audit struct {
		Entries []struct{ Action, Outcome, Target string }
	}
	cp.Get("/api/v1/audit", &audit)
	seen := map[string]bool{}
	for _, e := range audit.Entries {
		seen[e.Action+" "+e.Outcome] = true
	}
	for _, want := range []string{"POST /api/v1/enroll enrolled", "POST /api/v1/enroll refused", "POST /api/v1/devices/:id/revoke 200", "POST /api/v1/enrollments 201"} {
		if !seen[want] {
			t.Errorf("audit log lacks %q: %v", want, seen)
		}
	}
}

func redeemOK(t *testing.T, cp *fleettest.ControlPlane, token, device string) wenroll.Response {
	t.Helper()
	code, r := redeem(t, cp, token, device)
	if code != 200 || r.Device != device || r.Username != device || r.Password == "" || len(r.TrustDocument) == 0 {
		t.Fatalf("redeem for %s: %d %+v", device, code, r)
	}
	return r
}

// TestEnrollMosquittoACL: the generated Mosquitto password file and ACL enforce the same policy
// on a real Mosquitto that the control plane uses as its broker; after a revocation and SIGHUP
// the device is refused.
func TestEnrollMosquittoACL(t *testing.T) {
	k := fleettest.NewKeys(t)
	doc, dir := trustSetup(t, k)
	files := t.TempDir()
	// First generation: only the control plane's own account, so it can connect.
	if err := enroll.WriteMosquittoFiles(files, nil, enroll.MosquittoOptions{}); err != nil {
		t.Fatal(err)
	}
	m := brokertest.StartMosquitto(t, brokertest.MosquittoOptions{NoPersistence: true, Config: []string{
		"use_username_as_clientid true", "allow_anonymous false",
		"password_file " + filepath.Join(files, enroll.PasswdFile), "acl_file " + filepath.Join(files, enroll.ACLFile)}})
	cpPass, err := os.ReadFile(filepath.Join(files, enroll.ControlPlaneFile))
	if err != nil {
		t.Fatal(err)
	}
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustDoc: doc, ControlKey: filepath.Join(dir, "control.key"), MosquittoDir: files,
		Broker: mqttc.Config{URLs: []string{m.URL()}, Username: "edgefleet-controlplane", Password: strings.TrimSpace(string(cpPass)), ClientID: "edgefleet-controlplane"}})

	multi := createToken(t, cp, "line-m", 2, "1h")
	ca, cb := redeemOK(t, cp, multi, "acl-a"), redeemOK(t, cp, multi, "acl-b")
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	fleettest.Eventually(t, 30*time.Second, "Mosquitto accepts the enrolled device after SIGHUP", func() bool {
		d, err := dial(m.URL(), "acl-a", ca.Username, ca.Password)
		if err == nil {
			d.c.Disconnect(0)
		}
		return err == nil
	})
	if d, err := dial(m.URL(), "acl-a", "acl-a", "guess"); err == nil {
		d.c.Disconnect(0)
		t.Error("wrong password accepted by Mosquitto")
	}
	checkACL(t, cp, k, m.URL(), ca, cb, false)

	probe := mustDial(t, m.URL(), "acl-a", ca.Username, ca.Password)
	if code, body := cp.Do("POST", "/api/v1/devices/acl-a/revoke", nil, nil); code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	pw, _ := os.ReadFile(filepath.Join(files, enroll.PasswdFile))
	if strings.Contains(string(pw), "acl-a:") || !strings.Contains(string(pw), "acl-b:") {
		t.Fatalf("password file after revoking acl-a:\n%s", pw)
	}
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-probe.lost: // Mosquitto 2.0 drops clients whose account is gone on reload
	case <-time.After(30 * time.Second):
		t.Fatal("revoked device's live session survived the reload")
	}
	fleettest.Eventually(t, 30*time.Second, "Mosquitto refuses the revoked device after SIGHUP", func() bool {
		d, err := dial(m.URL(), "acl-a", ca.Username, ca.Password)
		if err == nil {
			d.c.Disconnect(0)
		}
		return err != nil
	})
	if d, err := dial(m.URL(), "acl-b", cb.Username, cb.Password); err != nil {
		t.Errorf("B (positive control) refused after the reload: %v", err)
	} else {
		d.c.Disconnect(0)
	}
}
