package brokertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestShippedConfigRuns starts mosquitto with the shipped file itself, only
// its paths and ports rewritten, with accounts and the ACL its comments
// describe: it checks the file is accepted by mosquitto 2.0, that
// anonymous clients are refused, and that a device reads only its own
// desired state.
func TestShippedConfigRuns(t *testing.T) {
	bin := RequireMosquitto(t)
	passwd, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		t.Skipf("mosquitto_passwd not found: %s", MosquittoInstall)
	}
	dir := t.TempDir()
	conf := readFile(t, shippedConf)

	// The ACL as documented in the file's comments.
	acl := strings.Join(documentedACL(t, conf), "\n") + "\n"
	writeFile(t, filepath.Join(dir, "edgefleet.acl"), acl)
	pw := filepath.Join(dir, "edgefleet.passwd")
	for i, acct := range [][2]string{{"controlplane-1", "cp-secret"}, {"dev-0001", "d1-secret"}, {"dev-0002", "d2-secret"}} {
		args := []string{"-b", pw, acct[0], acct[1]}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command(passwd, args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
		}
	}
	certs := selfSignedCert(t, dir)

	plain, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	tlsPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	r := strings.NewReplacer(
		"listener 1883 127.0.0.1", "listener "+strconv.Itoa(plain)+" 127.0.0.1",
		"listener 8883", "listener "+strconv.Itoa(tlsPort)+" 127.0.0.1",
		"/etc/mosquitto/certs/ca.crt", certs,
		"/etc/mosquitto/certs/server.crt", certs,
		"/etc/mosquitto/certs/server.key", filepath.Join(dir, "server.key"),
		"/etc/mosquitto/edgefleet.passwd", pw,
		"/etc/mosquitto/edgefleet.acl", filepath.Join(dir, "edgefleet.acl"),
		"/var/lib/mosquitto/", dir+"/",
	)
	conf = r.Replace(conf)
	if os.Geteuid() == 0 {
		conf += "\nuser root\n" // see Mosquitto.config
	}
	m := &Mosquitto{bin: bin, dir: dir, port: plain, version: mosquittoVersion(bin),
		confPath: filepath.Join(dir, "mosquitto.conf"), logPath: filepath.Join(dir, "mosquitto.log")}
	writeFile(t, m.confPath, conf)
	t.Cleanup(func() {
		m.Stop()
		if t.Failed() {
			t.Logf("config:\n%s\nlog:\n%s", conf, m.Log())
		}
	})
	if err := m.start(); err != nil {
		t.Fatalf("shipped config does not start: %v\n%s", err, m.Log())
	}

	clientMsgs := map[paho.Client]chan paho.Message{}
	connect := func(user, pass, clientID string) (paho.Client, error) {
		msgs := make(chan paho.Message, 16)
		o := paho.NewClientOptions().AddBroker(m.URL()).SetClientID(clientID).SetUsername(user).SetPassword(pass).
			SetAutoReconnect(false).SetConnectTimeout(3 * time.Second).
			SetDefaultPublishHandler(func(_ paho.Client, msg paho.Message) { msgs <- msg })
		cl := paho.NewClient(o)
		tok := cl.Connect()
		tok.WaitTimeout(3 * time.Second)
		if tok.Error() != nil {
			return nil, tok.Error()
		}
		t.Cleanup(func() { cl.Disconnect(50) })
		clientMsgs[cl] = msgs
		return cl, nil
	}
	if _, err := connect("", "", "anon"); err == nil {
		t.Errorf("anonymous client accepted")
	}
	if _, err := connect("dev-0001", "wrong", "dev-0001"); err == nil {
		t.Errorf("wrong password accepted")
	}
	cp, err := connect("controlplane-1", "cp-secret", "controlplane-1")
	if err != nil {
		t.Fatalf("control plane: %v", err)
	}
	for _, d := range []string{"dev-0001", "dev-0002"} {
		waitPaho(t, cp.Publish("edgefleet/devices/"+d+"/desired", 1, true, "desired for "+d))
	}
	// dev-0001 claims dev-0002's client id: use_username_as_clientid must
	// make it dev-0001 anyway, so the ACL's %c cannot be spoofed.
	dev, err := connect("dev-0001", "d1-secret", "dev-0002")
	if err != nil {
		t.Fatalf("device: %v", err)
	}
	waitPaho(t, dev.Subscribe("edgefleet/devices/+/desired", 1, nil))
	select {
	case msg := <-clientMsgs[dev]:
		if msg.Topic() != "edgefleet/devices/dev-0001/desired" {
			t.Errorf("dev-0001 read %s", msg.Topic())
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("dev-0001 did not get its own retained desired state")
	}
	select {
	case msg := <-clientMsgs[dev]:
		t.Errorf("dev-0001 also read %s", msg.Topic())
	case <-time.After(quietWindow):
	}
	// And may publish its own status, which the control plane sees.
	waitPaho(t, cp.Subscribe("edgefleet/devices/+/status", 1, nil))
	waitPaho(t, dev.Publish("edgefleet/devices/dev-0002/status", 1, false, "spoofed"))
	waitPaho(t, dev.Publish("edgefleet/devices/dev-0001/status", 1, false, "online"))
	select {
	case msg := <-clientMsgs[cp]:
		if msg.Topic() != "edgefleet/devices/dev-0001/status" {
			t.Errorf("control plane got %q on %s", msg.Payload(), msg.Topic())
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("device status did not reach the control plane")
	}
}

func waitPaho(t *testing.T, tok paho.Token) {
	t.Helper()
	if !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt: %v", tok.Error())
	}
}

var aclLine = regexp.MustCompile(`^#\s+((user|topic|pattern)\s.*)$`)

// documentedACL extracts the example ACL from the shipped file's comments.
func documentedACL(t *testing.T, conf string) []string {
	var out []string
	for _, l := range strings.Split(conf, "\n") {
		if m := aclLine.FindStringSubmatch(l); m != nil {
			out = append(out, m[1])
		}
	}
	if len(out) < 5 {
		t.Fatalf("no ACL example found in %s", shippedConf)
	}
	return out
}

// selfSignedCert writes server.crt/server.key for 127.0.0.1 and returns the
// certificate's path (it serves as its own CA).
func selfSignedCert(t *testing.T, dir string) string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, DNSNames: []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	crt := filepath.Join(dir, "server.crt")
	writeFile(t, crt, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, filepath.Join(dir, "server.key"), string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
	return crt
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
