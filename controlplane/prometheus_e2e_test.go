package controlplane_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgefleet/edgefleet/agent/updater"
	"github.com/edgefleet/edgefleet/internal/fleettest"
)

const prometheusBin = "/usr/bin/prometheus"

// TestPrometheusScrape runs a real Prometheus (Debian package prometheus) that scrapes a control
// plane with a simulated fleet every second using the admin token, and checks through
// Prometheus' query API that the fleet, inference traffic and latency metrics arrive with the
// expected labels. It also checks that every metric the shipped Grafana dashboard queries is
// exported.
func TestPrometheusScrape(t *testing.T) {
	if _, err := os.Stat(prometheusBin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s missing (install the Debian package prometheus): %v", prometheusBin, err)
		}
		t.Skipf("SKIPPING: %s missing (apt-get install prometheus); the /metrics end-to-end test did not run", prometheusBin)
	}
	const n = 6
	fleettest.Models(t)
	k := fleettest.NewKeys(t)
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustKeys: []string{k.PubPath}})
	fleettest.Simulate(t, cp, cp.BrokerURL(), k, n, "--groups", "line-a=50%,line-b=50%", "--rate", "20")

	// Prometheus, scraping /metrics every second with the admin token.
	promAddr := fleettest.FreeAddr(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: edgefleet
    scrape_interval: 1s
    scrape_timeout: 1s
    metrics_path: /metrics
    authorization:
      credentials: %q
    static_configs:
      - targets: [%q]
`, cp.Token, cp.Info.HTTPAddr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	plog, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	prom := exec.Command(prometheusBin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr, "--log.level=warn")
	prom.Stdout, prom.Stderr = plog, plog
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		prom.Process.Signal(syscall.SIGTERM)
		prom.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(plog.Name())
			t.Logf("prometheus log:\n%s", b)
		}
	})

	fleettest.Eventually(t, 30*time.Second, "simulated devices online in their groups", func() bool {
		groups := map[string]int{}
		for _, d := range cp.Devices() {
			if d.Online {
				groups[d.Group]++
			}
		}
		return groups["line-a"] == n/2 && groups["line-b"] == n/2
	})
	// The bundle carries a drift reference and reaches the fleet through a rollout, so rollout
	// metrics exist too.
	path, id := fleettest.BuildBundleRef(t, k, "hello_deepa.onnx", "wake", "1.0.0", 300)
	cp.Push(path)
	spec := `{"bundle": "wake@1.0.0", "target": {"groups": ["line-a", "line-b"]}, "stages": [{"percent": 100}]}`
	if code, body := cp.Do("POST", "/api/v1/rollouts", strings.NewReader(spec), nil); code != 201 {
		t.Fatalf("create rollout: %d %s", code, body)
	}
	fleettest.Eventually(t, 30*time.Second, "every simulated device serves the bundle", func() bool {
		for i := 1; i <= n; i++ {
			if m := cp.Model(fmt.Sprintf("sim-%05d", i), "wake"); m.Active != id || m.State != updater.StepCommitted {
				return false
			}
		}
		return true
	})

	query := func(q string) ([]promSample, error) {
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var body struct {
			Status string
			Error  string
			Data   struct {
				ResultType string
				Result     []promSample
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return nil, err
		}
		if body.Status != "success" {
			return nil, fmt.Errorf("%s: %s", q, body.Error)
		}
		return body.Data.Result, nil
	}
	lastWhy := ""
	defer func() {
		if t.Failed() {
			t.Log("last unmet:", lastWhy)
		}
	}()
	// want: for each query, the label sets (a subset of each sample's labels) that must all appear.
	checks := []struct {
		q    string
		want []map[string]string
	}{
		{`edgefleet_devices{online="true"} > 0`, []map[string]string{
			{"group": "line-a", "online": "true", "job": "edgefleet"}, {"group": "line-b", "online": "true"}}},
		{`edgefleet_model_devices`, []map[string]string{
			{"model": "wake", "version": "1.0.0", "group": "line-a"}, {"model": "wake", "version": "1.0.0", "group": "line-b"}}},
		{`edgefleet_inference_requests > 0`, []map[string]string{
			{"model": "wake", "version": "1.0.0", "group": "line-a"}, {"model": "wake", "version": "1.0.0", "group": "line-b"}}},
		{`edgefleet_inference_latency_seconds > 0`, []map[string]string{
			{"model": "wake", "version": "1.0.0", "group": "line-a", "quantile": "0.5"},
			{"model": "wake", "version": "1.0.0", "group": "line-a", "quantile": "0.95"},
			{"model": "wake", "version": "1.0.0", "group": "line-b", "quantile": "0.99"}}},
		{`edgefleet_drift_score{test="ks"}`, []map[string]string{
			{"model": "wake", "version": "1.0.0", "group": "line-a", "feature": "onnx::Flatten_0.mean"}}},
		{`edgefleet_rollout_state == 1`, []map[string]string{{"state": "completed"}}},
		{`edgefleet_ingest_committed_total > 0`, []map[string]string{{"job": "edgefleet"}}},
	}
	fleettest.Eventually(t, 30*time.Second, "Prometheus has the edgefleet series", func() bool {
		for _, c := range checks {
			got, err := query(c.q)
			if err != nil {
				lastWhy = err.Error()
				return false
			}
			for _, w := range c.want {
				if !anyHas(got, w) {
					lastWhy = fmt.Sprintf("%s: no sample with %v in %v", c.q, w, got)
					return false
				}
			}
		}
		return true
	})
	p95, _ := query(`edgefleet_inference_latency_seconds{quantile="0.95"}`)
	reqs, _ := query(`edgefleet_inference_requests`)
	t.Logf("p95: %v", p95)
	t.Logf("requests (5m): %v", reqs)

	// The shipped dashboard parses and queries only metrics the control plane exports.
	scrape := scrapeMetrics(t, cp)
	for _, m := range dashboardMetrics(t) {
		if !scrape[m] {
			t.Errorf("dashboard queries %s, which /metrics does not export", m)
		}
	}
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`
}

func (s promSample) String() string { return fmt.Sprintf("%v=%v", s.Metric, s.Value[1:]) }

func anyHas(samples []promSample, want map[string]string) bool {
	for _, s := range samples {
		ok := true
		for k, v := range want {
			if s.Metric[k] != v {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// scrapeMetrics returns the metric names with samples in one scrape of the control plane.
func scrapeMetrics(t *testing.T, cp *fleettest.ControlPlane) map[string]bool {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+cp.Info.HTTPAddr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+cp.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, b)
	}
	names := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}

var metricName = regexp.MustCompile(`\bedgefleet_[a-z0-9_]+`)

// dashboardMetrics parses the Grafana dashboard and returns the metric names its panels and
// variables query.
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fleettest.RepoRoot(), "packaging", "grafana", "edgefleet-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct{ Definition string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if len(d.Panels) < 5 {
		t.Fatalf("dashboard has %d panels", len(d.Panels))
	}
	set := map[string]bool{}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range metricName.FindAllString(tg.Expr, -1) {
				set[m] = true
			}
		}
	}
	for _, v := range d.Templating.List {
		for _, m := range metricName.FindAllString(v.Definition, -1) {
			set[m] = true
		}
	}
	out := make([]string, 0, len(set))
	for m := range set {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}
