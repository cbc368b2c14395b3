// Package mqttc builds paho MQTT client options shared by the agent and the control plane: broker
// URLs (several, tried in turn for fail-over, each client starting at its own), TLS with a private CA and client certificates,
// and credentials. It holds no connection logic of its own.
package mqttc

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"hash/fnv"
	"net/url"
	"os"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Config is how to reach a broker.
type Config struct {
	// URLs like mqtt://host:1883 or mqtts://host:8883. Several are the nodes of one cluster: a
	// client tries them in turn, starting at the one its ClientID picks (Ordered), so a fleet
	// spreads over the nodes instead of all landing on the first, and losing that node does not
	// drop every device at once.
	URLs     []string
	ClientID string
	Username string
	Password string `json:"-"`
	CAFile   string // PEM bundle of CAs that sign the broker's certificate
	CertFile string // client certificate (PEM), with KeyFile
	KeyFile  string
	// InsecureSkipVerify is for lab brokers with self-signed certificates only.
	InsecureSkipVerify bool
	KeepAlive          time.Duration
}

// ParseURLs splits a comma-separated list and checks every URL.
func ParseURLs(s string) ([]string, error) {
	var out []string
	for _, u := range strings.Split(s, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		p, err := url.Parse(u)
		if err != nil || p.Host == "" {
			return nil, fmt.Errorf("broker URL %q: want mqtt://host:port or mqtts://host:port", u)
		}
		switch p.Scheme {
		case "mqtt", "tcp", "mqtts", "ssl", "tls":
		default:
			return nil, fmt.Errorf("broker URL %q: unsupported scheme %q (use mqtt or mqtts)", u, p.Scheme)
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no broker URL given")
	}
	return out, nil
}

// Ordered returns URLs rotated to start at the node the client id hashes to: the same client
// always prefers the same node (its persistent session lives there first), different clients
// spread evenly, and the rest follow in the configured order for fail-over.
func (c Config) Ordered() []string {
	if len(c.URLs) < 2 || c.ClientID == "" {
		return c.URLs
	}
	h := fnv.New32a()
	h.Write([]byte(c.ClientID))
	start := int(h.Sum32() % uint32(len(c.URLs)))
	return append(append([]string(nil), c.URLs[start:]...), c.URLs[:start]...)
}

// TLS returns the TLS configuration, or nil when no TLS file is set.
func (c Config) TLS() (*tls.Config, error) {
	if c.CAFile == "" && c.CertFile == "" && !c.InsecureSkipVerify {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipVerify}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read broker CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("broker CA file %s holds no PEM certificate", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	if c.CertFile != "" || c.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate %s / key %s: %w", c.CertFile, c.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Options returns paho options with servers, identity, TLS and credentials set. Callers add
// handlers, will, session and reconnect policy.
func (c Config) Options() (*paho.ClientOptions, error) {
	if len(c.URLs) == 0 {
		return nil, fmt.Errorf("no broker URL given")
	}
	o := paho.NewClientOptions()
	for _, u := range c.Ordered() {
		o.AddBroker(u)
	}
	o.SetClientID(c.ClientID)
	// MQTT 3.1.1 only: left at 0, paho falls back to 3.1 ("MQIsdp") after any refused CONNECT,
	// which brokers such as NATS reject outright, doubling the connection attempts in a
	// reconnection storm.
	o.SetProtocolVersion(4)
	if c.Username != "" {
		o.SetUsername(c.Username)
		o.SetPassword(c.Password)
	}
	t, err := c.TLS()
	if err != nil {
		return nil, err
	}
	if t != nil {
		o.SetTLSConfig(t)
	}
	ka := c.KeepAlive
	if ka == 0 {
		ka = 30 * time.Second
	}
	o.SetKeepAlive(ka)
	o.SetPingTimeout(10 * time.Second)
	o.SetConnectTimeout(10 * time.Second)
	o.SetWriteTimeout(10 * time.Second)
	o.SetOrderMatters(false)
	return o, nil
}
