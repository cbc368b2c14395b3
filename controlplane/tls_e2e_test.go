package controlplane_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/internal/brokertest"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/internal/mqttc"
)

// pki is a private CA with a server certificate for 127.0.0.1 and a client certificate, as a
// site running its own Mosquitto would issue them.
type pki struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

func newPKI(t *testing.T, dir string) pki {
	t.Helper()
	now := time.Now()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edgefleet test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) ([]byte, *ecdsa.PrivateKey) {
		k := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	srvDER, srvKey := issue(2, "127.0.0.1", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	cliDER, cliKey := issue(3, "edgefleet-client", x509.ExtKeyUsageClientAuth, nil)
	p := pki{
		CA: filepath.Join(dir, "ca.pem"), ServerCert: filepath.Join(dir, "server.pem"), ServerKey: filepath.Join(dir, "server.key"),
		ClientCert: filepath.Join(dir, "client.pem"), ClientKey: filepath.Join(dir, "client.key"),
	}
	writePEM(t, p.CA, "CERTIFICATE", caDER)
	writePEM(t, p.ServerCert, "CERTIFICATE", srvDER)
	writePEM(t, p.ServerKey, "PRIVATE KEY", pkcs8(t, srvKey))
	writePEM(t, p.ClientCert, "CERTIFICATE", cliDER)
	writePEM(t, p.ClientKey, "PRIVATE KEY", pkcs8(t, cliKey))
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pkcs8(t *testing.T, k *ecdsa.PrivateKey) []byte {
	b, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// passwordFile writes a Mosquitto password file with mosquitto_passwd, so the hashes are the
// broker's own format rather than our guess at it.
func passwordFile(t *testing.T, path string, users map[string]string) {
	t.Helper()
	bin, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mosquitto_passwd is required in CI: %s", brokertest.MosquittoInstall)
		}
		t.Skipf("mosquitto_passwd not found (%s); the TLS and password broker test did NOT run", brokertest.MosquittoInstall)
	}
	first := true
	for user, pass := range users {
		args := []string{"-b", path, user, pass}
		if first {
			args = append([]string{"-c"}, args...) // -c creates (and truncates) the file
			first = false
		}
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd %v: %v\n%s", args, err, out)
		}
	}
}

// TestBrokerTLSAndPassword runs the control plane and agents against a Mosquitto that requires
// TLS with client certificates and a password, as a site's existing broker would (issue 11).
func TestBrokerTLSAndPassword(t *testing.T) {
	brokertest.RequireMosquitto(t)
	dir := t.TempDir()
	certs := newPKI(t, dir)
	const cpPass, devPass = "cp-Secret-1", "dev-Secret-2"
	pwfile := filepath.Join(dir, "passwd")
	passwordFile(t, pwfile, map[string]string{"controlplane": cpPass, "device": devPass})

	// brokertest writes its listener line first, so these TLS options configure that listener;
	// password_file and allow_anonymous are global.
	m := brokertest.StartMosquitto(t, brokertest.MosquittoOptions{Config: []string{
		"cafile " + certs.CA,
		"certfile " + certs.ServerCert,
		"keyfile " + certs.ServerKey,
		"require_certificate true",
		"password_file " + pwfile,
		"allow_anonymous false",
	}})
	url := fmt.Sprintf("mqtts://127.0.0.1:%d", m.Port())

	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{Broker: mqttc.Config{
		URLs: []string{url}, CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey,
		Username: "controlplane", Password: cpPass,
	}})

	tlsFlags := []string{"--tls-ca", certs.CA, "--tls-cert", certs.ClientCert, "--tls-key", certs.ClientKey}
	withCreds := func(pass string, flags ...string) []string {
		return append(append([]string{}, flags...), "--broker-username", "device", "--broker-password", pass)
	}
	// A closed port first: the agent must fail over to the next URL.
	closed := fleettest.FreeAddr(t)
	good := fleettest.StartAgent(t, url, "tls-good", "secure", withCreds(devPass, tlsFlags...)...)
	failover := fleettest.StartAgent(t, "mqtts://"+closed+","+url, "tls-failover", "secure", withCreds(devPass, tlsFlags...)...)
	wrongPass := fleettest.StartAgent(t, url, "tls-wrong-password", "secure", withCreds("not-the-password", tlsFlags...)...)
	noCA := fleettest.StartAgent(t, url, "tls-no-ca", "secure", withCreds(devPass, "--tls-cert", certs.ClientCert, "--tls-key", certs.ClientKey)...)
	noCert := fleettest.StartAgent(t, url, "tls-no-client-cert", "secure", withCreds(devPass, "--tls-ca", certs.CA)...)

	fleettest.Eventually(t, 60*time.Second, "agents with CA, client certificate and password online (one after fail-over)", func() bool {
		devs := cp.Devices()
		return devs["tls-good"].Online && devs["tls-failover"].Online && devs["tls-good"].Reported != nil
	})

	// Each refused agent logs why, in words an operator can act on.
	refusals := []struct {
		a    *fleettest.Agent
		why  string
		says []string
	}{
		{wrongPass, "wrong password", []string{"not Authorized", "bad user name or password"}},
		{noCA, "server certificate not verifiable without the CA", []string{"certificate signed by unknown authority", "x509:"}},
		{noCert, "no client certificate", []string{"certificate required", "bad certificate", "handshake failure", "EOF", "connection reset"}},
	}
	for _, r := range refusals {
		fleettest.Eventually(t, 30*time.Second, r.a.ID+" logs why the broker refused it ("+r.why+")", func() bool {
			l := r.a.Log()
			if !strings.Contains(l, "cannot reach broker") {
				return false
			}
			for _, s := range r.says {
				if strings.Contains(l, s) {
					return true
				}
			}
			return false
		})
	}
	// The refused agents have had at least one attempt each; none of them is in the registry.
	devs := cp.Devices()
	for _, r := range refusals {
		if d, ok := devs[r.a.ID]; ok && d.Online {
			t.Errorf("%s is online despite %s", r.a.ID, r.why)
		}
		for _, l := range strings.Split(r.a.Log(), "\n") {
			if strings.Contains(l, "cannot reach broker") {
				t.Logf("%s (%s): %s", r.a.ID, r.why, l)
				break
			}
		}
	}
	if !devs["tls-good"].Online {
		t.Error("tls-good went offline")
	}
	for _, secret := range []string{cpPass, devPass} {
		if strings.Contains(good.Log()+failover.Log()+wrongPass.Log(), secret) {
			t.Errorf("a password appears in an agent log")
		}
	}
}
