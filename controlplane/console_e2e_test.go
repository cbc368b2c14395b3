package controlplane_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/edgefleet/edgefleet/controlplane/api"
	"github.com/edgefleet/edgefleet/internal/fleettest"
	"github.com/edgefleet/edgefleet/ota/builder"
	"github.com/edgefleet/edgefleet/ota/sign"
)

// TestConsoleSession checks the console's login without a browser: the session cookie is
// HttpOnly and SameSite=Strict, a mutating call with the cookie but without the CSRF header is
// refused with 403, and logout ends the session.
func TestConsoleSession(t *testing.T) {
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{})
	base := "http://" + cp.Info.HTTPAddr

	do := func(method, path, body string, hdr map[string]string, cookies ...*http.Cookie) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		for _, c := range cookies {
			req.AddCookie(c)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	jsonHdr := map[string]string{"Content-Type": "application/json"}

	// The console itself is public (it only shows a login page) and locked down by CSP.
	resp, body := do("GET", "/", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, "/static/js/app.js") || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("GET /: %d %v\n%s", resp.StatusCode, resp.Header, body)
	}
	resp, _ = do("GET", "/static/js/app.js", "", map[string]string{"If-None-Match": resp.Header.Get("ETag")})
	if resp.StatusCode != 200 {
		t.Fatalf("app.js: %d", resp.StatusCode)
	}
	if resp2, _ := do("GET", "/static/js/app.js", "", map[string]string{"If-None-Match": resp.Header.Get("ETag")}); resp2.StatusCode != http.StatusNotModified {
		t.Fatalf("app.js revalidation: %d, want 304", resp2.StatusCode)
	}

	// Wrong token, wrong content type (an HTML form), another site's origin: no session.
	for _, tc := range []struct {
		body string
		hdr  map[string]string
		code int
	}{
		{`{"token": "nope"}`, jsonHdr, 401},
		{`token=` + cp.Token, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415},
		{`{"token": "` + cp.Token + `"}`, map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"}, 403},
	} {
		resp, body := do("POST", "/api/v1/session", tc.body, tc.hdr)
		if resp.StatusCode != tc.code || len(resp.Cookies()) != 0 {
			t.Fatalf("login %s %v: %d %s cookies %v, want %d and no cookie", tc.body, tc.hdr, resp.StatusCode, body, resp.Cookies(), tc.code)
		}
	}

	resp, body = do("POST", "/api/v1/session", `{"token": "`+cp.Token+`"}`, map[string]string{"Content-Type": "application/json", "Origin": base})
	if resp.StatusCode != 201 {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	var sess, csrf *http.Cookie
	for _, c := range resp.Cookies() {
		switch c.Name {
		case api.SessionCookie:
			sess = c
		case api.CSRFCookie:
			csrf = c
		}
	}
	if sess == nil || csrf == nil {
		t.Fatalf("login set cookies %v", resp.Header["Set-Cookie"])
	}
	if !sess.HttpOnly || sess.SameSite != http.SameSiteStrictMode || sess.Path != "/" {
		t.Fatalf("session cookie must be HttpOnly and SameSite=Strict: %q", sess.Raw)
	}
	if csrf.HttpOnly || csrf.SameSite != http.SameSiteStrictMode || csrf.Value == "" || csrf.Value == sess.Value {
		t.Fatalf("csrf cookie must be readable by the page, SameSite=Strict and distinct: %q", csrf.Raw)
	}
	if sess.Secure {
		t.Fatalf("plain HTTP must not get a Secure cookie (the browser would drop it): %q", sess.Raw)
	}

	// Reads with the cookie work; so does whoami.
	if resp, body := do("GET", "/api/v1/devices", "", nil, sess); resp.StatusCode != 200 {
		t.Fatalf("GET devices with the session: %d %s", resp.StatusCode, body)
	}
	if resp, body := do("GET", "/api/v1/session", "", nil, sess); resp.StatusCode != 200 || !strings.Contains(body, `"principal":"admin"`) {
		t.Fatalf("whoami: %d %s", resp.StatusCode, body)
	}
	// A mutating call with the cookie but without (or with a wrong) CSRF header is refused...
	mutate := `{"bundle": "nope@1.0.0"}`
	for _, h := range []map[string]string{jsonHdr, {"Content-Type": "application/json", api.CSRFHeader: "forged"}, {"Content-Type": "application/json", api.CSRFHeader: sess.Value}} {
		resp, body := do("PUT", "/api/v1/groups/line-a/desired", mutate, h, sess, csrf)
		if resp.StatusCode != 403 || !strings.Contains(body, `"code":"csrf"`) {
			t.Fatalf("PUT with cookie and headers %v: %d %s, want 403 csrf", h, resp.StatusCode, body)
		}
	}
	// ... and with the header it goes through to the handler (422: no such bundle).
	resp, body = do("PUT", "/api/v1/groups/line-a/desired", mutate, map[string]string{"Content-Type": "application/json", api.CSRFHeader: csrf.Value}, sess, csrf)
	if resp.StatusCode != 422 {
		t.Fatalf("PUT with cookie and CSRF header: %d %s, want 422 unknown_bundle", resp.StatusCode, body)
	}
	// A bearer request needs no CSRF header: browsers never send Authorization by themselves.
	if code, body := cp.Do("PUT", "/api/v1/groups/line-a/desired", strings.NewReader(mutate), nil); code != 422 {
		t.Fatalf("bearer PUT: %d %s", code, body)
	}
	// The forged attempts never reached the audit log as the admin's; the login did.
	var audit struct {
		Entries []struct{ Who, Action, Outcome string }
	}
	cp.Do("GET", "/api/v1/audit", nil, &audit)
	var logins int
	for _, e := range audit.Entries {
		if e.Action == "POST /api/v1/session" && e.Outcome == "201" && e.Who == "admin" {
			logins++
		}
	}
	if logins != 1 {
		t.Fatalf("audit should hold one successful login: %+v", audit.Entries)
	}

	// Logout needs the CSRF header too, then the cookie is dead.
	if resp, _ := do("POST", "/api/v1/session/logout", "", nil, sess, csrf); resp.StatusCode != 403 {
		t.Fatalf("logout without CSRF: %d", resp.StatusCode)
	}
	if resp, _ := do("POST", "/api/v1/session/logout", "", map[string]string{api.CSRFHeader: csrf.Value}, sess, csrf); resp.StatusCode != 204 {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if resp, body := do("GET", "/api/v1/devices", "", nil, sess); resp.StatusCode != 401 {
		t.Fatalf("GET with an ended session: %d %s, want 401", resp.StatusCode, body)
	}
}

// chromium finds Debian's Chromium. Missing, it fails under CI=true and skips loudly elsewhere.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("EDGEFLEET_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is missing: apt-get install -y chromium")
	}
	t.Skip("SKIPPING the console browser test: no chromium (apt-get install -y chromium)")
	return ""
}

// browserLog collects what the page reported: console errors, uncaught exceptions and
// browser-side errors (failed requests, CSP violations).
type browserLog struct {
	mu       sync.Mutex
	problems []string
	allowed  []string // substrings of expected entries (a 422 the test provokes on purpose)
}

func (b *browserLog) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, string(a.Value)+a.Description)
			}
			b.problems = append(b.problems, "console."+string(ev.Type)+": "+strings.Join(parts, " "))
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil {
			msg += " " + d.Exception.Description
		}
		b.problems = append(b.problems, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber, msg))
	case *cdplog.EventEntryAdded:
		if ev.Entry.Level == cdplog.EntryLevelError {
			b.problems = append(b.problems, fmt.Sprintf("log %s: %s (%s)", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL))
		}
	}
}

// unexpected returns the problems no allowed substring explains.
func (b *browserLog) unexpected() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
next:
	for _, p := range b.problems {
		for _, a := range b.allowed {
			if strings.Contains(p, a) {
				continue next
			}
		}
		out = append(out, p)
	}
	return out
}

// TestConsoleBrowser drives the web console in a real Chromium against a control plane with a
// simulated fleet: log in, see the fleet, open a device, create a rollout through the form
// (client-side validation, then the API's 422, then success), watch it advance without a reload,
// pause it, roll a group back through the confirmation dialog, read the audit log, set a group's
// capture policy through its settings form, see a capture refused for a group without one and
// made for the group with one, list, open and delete the dataset, read the control key's
// fingerprint on the Keys & trust page, and check that the page logged no error. Screenshots of each page go to $EDGEFLEET_SCREENSHOTS (a temp folder
// by default; docs/screenshots to refresh the README's).
func TestConsoleBrowser(t *testing.T) {
	chrome := chromium(t)
	fleettest.Models(t)
	k := fleettest.NewKeys(t)
	cp := fleettest.StartControlPlane(t, fleettest.CPOptions{TrustKeys: []string{k.PubPath}})
	const n = 10
	fleettest.Simulate(t, cp, cp.BrokerURL(), k, n, "--groups", "line-a=60%,line-b=40%", "--rate", "20")
	v1 := buildWake(t, k, "1.0.0", "")
	cp.Push(v1)
	cp.Push(buildWake(t, k, "1.1.0", "wake@1.0.0"))
	fleettest.Eventually(t, 60*time.Second, "simulated devices online", func() bool {
		on := 0
		for _, d := range cp.Devices() {
			if d.Online {
				on++
			}
		}
		return on == n
	})
	for _, g := range []string{"line-a", "line-b"} {
		if code, body := cp.Do("PUT", "/api/v1/groups/"+g+"/desired", map[string]string{"bundle": "wake@1.0.0", "bake": "0s"}, nil); code != 200 {
			t.Fatalf("baseline %s: %d %s", g, code, body)
		}
	}

	shots := os.Getenv("EDGEFLEET_SCREENSHOTS")
	if shots == "" {
		shots = filepath.Join(os.TempDir(), "edgefleet-console-screenshots")
	} else if !filepath.IsAbs(shots) {
		shots = filepath.Join(fleettest.RepoRoot(), shots)
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", shots)

	logs := &browserLog{allowed: []string{
		// The form is submitted once with a target that matches no device, to show the API's 422.
		"status of 422",
	}}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chrome), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 900))
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(alloc, chromedp.WithListener(logs.listen), chromedp.WithLogf(t.Logf))
	defer cancel()
	enableLog := chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, cdplog.Enable, cdp.Empty{})
		return err
	})
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := chromedp.Do(c, steps...); err != nil {
			t.Fatalf("%s: %v\nbrowser problems: %v", what, err, logs.unexpected())
		}
	}
	eval := func(js string) any {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		v, err := chromedp.Run(c, chromedp.Evaluate[any](js))
		if err != nil {
			t.Fatalf("evaluate %s: %v", js, err)
		}
		return v
	}
	// text is the innerText of the first element matching sel ("" when absent).
	text := func(sel string) string {
		v, _ := eval(fmt.Sprintf(`(document.querySelector(%q) || {}).innerText || ""`, sel)).(string)
		return v
	}
	waitText := func(sel, want string, timeout time.Duration) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for !strings.Contains(text(sel), want) {
			if time.Now().After(deadline) {
				shot(t, ctx, shots, "failure")
				t.Fatalf("%s never showed %q; it shows:\n%s\nbrowser problems: %v", sel, want, text(sel), logs.unexpected())
			}
			time.Sleep(150 * time.Millisecond)
		}
	}
	// setValue changes a form field as typing would: value, then input and change events.
	setValue := func(sel, v string) {
		t.Helper()
		eval(fmt.Sprintf(`(() => { const el = document.querySelector(%q); el.value = %q;
			el.dispatchEvent(new Event('input', {bubbles: true})); el.dispatchEvent(new Event('change', {bubbles: true})); return true })()`, sel, v))
	}
	check := func(sel string, on bool) {
		t.Helper()
		eval(fmt.Sprintf(`(() => { const el = document.querySelector(%q); el.checked = %v; el.dispatchEvent(new Event('change', {bubbles: true})); return true })()`, sel, on))
	}
	base := "http://" + cp.Info.HTTPAddr

	// Log in with the admin token.
	// The first call starts the browser and must not carry a timeout (it would end the browser).
	if err := chromedp.Do(ctx, enableLog); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	run("open the console", chromedp.EmulateViewport(1400, 900), chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#token")))
	shot(t, ctx, shots, "login")
	run("log in", chromedp.SendKeys(chromedp.CSS("#token"), cp.Token), chromedp.Click(chromedp.CSS("#login-submit")), chromedp.WaitVisible(chromedp.CSS("#stats")))
	if got := eval(`document.cookie.includes("ef_session")`); got != false {
		t.Fatal("the session cookie is readable from JavaScript: it must be HttpOnly")
	}
	waitText("#principal", "admin", 5*time.Second)

	// Overview: every simulated device, both groups, the baseline version.
	waitText("#stats", fmt.Sprint(n), 10*time.Second)
	waitText("#by-group", "line-a (6/6 online)", 10*time.Second)
	waitText("#by-group", "line-b (4/4 online)", 10*time.Second)
	waitText("#by-version", "wake@1.0.0", 60*time.Second)
	// The page refreshes itself: mark the window and check later that it was never reloaded.
	eval(`window.__noReload = true`)
	shot(t, ctx, shots, "overview")

	// Devices: the list, a filter, then one device.
	run("devices", chromedp.Navigate(base+"/#/devices"))
	waitText("#device-list", "sim-00010", 10*time.Second)
	waitText("#device-count", fmt.Sprintf("%d devices", n), 10*time.Second)
	shot(t, ctx, shots, "devices")
	setValue("#f-group", "line-b")
	waitText("#device-count", "4 devices", 10*time.Second)
	setValue("#f-group", "")
	waitText("#device-count", fmt.Sprintf("%d devices", n), 10*time.Second)
	run("open a device", chromedp.Click(chromedp.CSS(`#device-list a[href="#/devices/sim-00001"]`)))
	waitText("#device-models", "committed", 30*time.Second)
	waitText("#device-windows", "wake@1.0.0", 30*time.Second)
	waitText("#device-health", "CPU", 10*time.Second)
	shot(t, ctx, shots, "device")

	// Model registry and lineage.
	run("registry", chromedp.Navigate(base+"/#/bundles"))
	waitText("#bundle-list", "1.1.0", 10*time.Second)
	shot(t, ctx, shots, "models")
	eval(`location.hash = document.querySelector('#bundle-list tbody tr:first-child a').getAttribute('href')`)
	waitText("#lineage", "wake@1.0.0", 10*time.Second)
	shot(t, ctx, shots, "model")

	// Create a rollout through the form.
	run("new rollout", chromedp.Navigate(base+"/#/rollouts/new"))
	waitText("#rf-bundle", "wake@1.1.0", 10*time.Second)
	waitText("#rf-groups", "line-a", 10*time.Second)
	setValue("#rf-bundle", "wake@1.1.0")
	check(`#rf-groups input[value="line-a"]`, true)
	check(`#rf-groups input[value="line-b"]`, true)
	// A bad value first: the last stage at 50%, caught before anything is sent.
	setValue(".stage-row:nth-child(3) .st-amount", "50")
	run("submit a bad form", chromedp.Click(chromedp.CSS("#rf-submit")))
	waitText("#rf-errors", "the last stage must be 100 percent", 5*time.Second)
	shot(t, ctx, shots, "rollout-form-invalid")
	// Then something only the control plane can judge: a selector that matches no device.
	setValue(".stage-row:nth-child(3) .st-amount", "100")
	check(`#rf-groups input[value="line-a"]`, false)
	check(`#rf-groups input[value="line-b"]`, false)
	setValue("#rf-selector", "site=nowhere")
	run("submit a target that matches nothing", chromedp.Click(chromedp.CSS("#rf-submit")))
	waitText("#rf-apierror", "422", 10*time.Second)
	if got := text("#rf-apierror"); !strings.Contains(got, "empty_target") {
		t.Fatalf("the API's 422 is not shown plainly: %q", got)
	}
	shot(t, ctx, shots, "rollout-form-422")
	// Now a valid one: one canary, then half the fleet baking long enough to pause, then all.
	setValue("#rf-selector", "")
	check(`#rf-groups input[value="line-a"]`, true)
	check(`#rf-groups input[value="line-b"]`, true)
	setValue(".stage-row:nth-child(1) .st-bake", "2s")
	setValue(".stage-row:nth-child(2) .st-bake", "2m")
	check(".stage-row:nth-child(2) .st-approval", false)
	// Loose latency gate: the canary's p95 on a busy test machine is noise, not a regression.
	setValue("#rf-gate-p95_latency_max_ratio", "50")
	setValue("#rf-gate-min_samples", "5")
	setValue("#rf-gate-evaluations", "1")
	run("create the rollout", chromedp.Click(chromedp.CSS("#rf-submit")))
	waitText("#ro-stage", "Stage 0 of 0–2", 10*time.Second)
	loc := eval(`location.hash`).(string)
	rolloutID := strings.TrimPrefix(loc, "#/rollouts/")
	if !strings.HasPrefix(rolloutID, "r-") && rolloutID == loc {
		t.Fatalf("after create the console shows %s", loc)
	}
	eval(`window.__noReload = true`)
	// Watch it advance with no reload: the page polls.
	waitText("#ro-stage", "Stage 1 of 0–2", 60*time.Second)
	waitText("#ro-decisions", "advance", 10*time.Second)
	if eval(`window.__noReload === true`) != true {
		t.Fatal("the rollout page was reloaded; it must update in place")
	}
	shot(t, ctx, shots, "rollout")
	run("pause", chromedp.Click(chromedp.CSS("#ro-pause")))
	waitText("#ro-state", "paused", 10*time.Second)
	waitText("#ro-decisions", "pause", 10*time.Second)
	var ro struct{ State string }
	if code, body := cp.Do("GET", "/api/v1/rollouts/"+rolloutID, nil, &ro); code != 200 || ro.State != "paused" {
		t.Fatalf("rollout %s after pause in the console: %d %s", rolloutID, code, body)
	}
	shot(t, ctx, shots, "rollout-paused")

	// Roll line-a back through the confirmation dialog.
	run("groups", chromedp.Navigate(base+"/#/groups"))
	waitText("#group-list", "line-a", 10*time.Second)
	run("ask to roll back", chromedp.Click(chromedp.CSS(`button[data-rollback="line-a"]`)), chromedp.WaitVisible(chromedp.CSS("#confirm-ok")))
	shot(t, ctx, shots, "rollback-confirm")
	run("confirm", chromedp.Click(chromedp.CSS("#confirm-ok")))
	waitText("#rollback-result", "Rolled back line-a", 10*time.Second)
	// The rollback reached the rollout: line-a's devices are going back or were never sent.
	var devs struct {
		Devices []struct{ Device, Group, Status string }
	}
	if code, body := cp.Do("GET", "/api/v1/rollouts/"+rolloutID+"/devices", nil, &devs); code != 200 {
		t.Fatalf("rollout devices: %d %s", code, body)
	}
	for _, d := range devs.Devices {
		if d.Group == "line-a" && d.Status != "rolling_back" && d.Status != "rolled_back" && d.Status != "excluded" {
			t.Fatalf("%s of line-a is %s after the group rollback", d.Device, d.Status)
		}
	}
	shot(t, ctx, shots, "groups")

	// The audit log shows who did all this.
	run("audit", chromedp.Navigate(base+"/#/audit"))
	waitText("#audit-list", "POST /api/v1/groups/:group/rollback", 10*time.Second)
	waitText("#audit-list", "POST /api/v1/rollouts/:id/pause", 10*time.Second)
	waitText("#audit-list", "POST /api/v1/session", 10*time.Second)
	shot(t, ctx, shots, "audit")

	// Rollouts list, and the overview at a tablet's width: no sideways scrolling of the page.
	run("rollouts", chromedp.Navigate(base+"/#/rollouts"))
	waitText("#rollout-list", rolloutID, 10*time.Second)
	shot(t, ctx, shots, "rollouts")
	run("tablet", chromedp.EmulateViewport(820, 1180), chromedp.Navigate(base+"/#/"))
	waitText("#by-version", "wake@", 10*time.Second)
	if eval(`document.documentElement.scrollWidth <= window.innerWidth`) != true {
		t.Fatalf("the overview scrolls sideways at 820px: scrollWidth %v", eval(`document.documentElement.scrollWidth`))
	}
	shot(t, ctx, shots, "overview-tablet")
	run("tablet rollout", chromedp.Navigate(base+"/#/rollouts/"+rolloutID))
	waitText("#ro-decisions", "pause", 10*time.Second)
	if eval(`document.documentElement.scrollWidth <= window.innerWidth`) != true {
		t.Fatalf("the rollout page scrolls sideways at 820px: scrollWidth %v", eval(`document.documentElement.scrollWidth`))
	}
	shot(t, ctx, shots, "rollout-tablet")

	// Group settings: baselines, the production flag and the capture policy, edited by an admin
	// through the form (a bad retention is caught before anything is sent).
	run("group page", chromedp.EmulateViewport(1400, 900), chromedp.Navigate(base+"/#/groups/line-b"))
	waitText("#group-baselines", "wake@", 10*time.Second)
	waitText("#gs-capture", "off", 10*time.Second)
	check("#gs-f-capture", true)
	setValue("#gs-f-retention", "a week")
	run("submit bad settings", chromedp.Click(chromedp.CSS("#gs-submit")))
	waitText("#gs-errors", "is not a duration", 5*time.Second)
	setValue("#gs-f-retention", "168h")
	setValue("#gs-f-max", "50")
	run("save settings", chromedp.Click(chromedp.CSS("#gs-submit")))
	waitText("#gs-result", "saved", 10*time.Second)
	waitText("#gs-capture", "enabled", 10*time.Second)
	var grp struct {
		Settings struct {
			Production bool
			Capture    struct {
				Enabled    bool
				Retention  string
				MaxSamples int `json:"max_samples"`
			}
		}
	}
	if code, body := cp.Do("GET", "/api/v1/groups/line-b", nil, &grp); code != 200 || !grp.Settings.Capture.Enabled ||
		grp.Settings.Capture.Retention != "168h" || grp.Settings.Capture.MaxSamples != 50 || grp.Settings.Production {
		t.Fatalf("line-b after the settings form: %d %s", code, body)
	}
	shot(t, ctx, shots, "group-settings")

	// Datasets: none yet. A capture from a device of line-a (no policy) is refused plainly; one
	// from line-b (policy just enabled) makes a dataset with its lineage.
	run("datasets", chromedp.Navigate(base+"/#/datasets"))
	waitText("#dataset-list", "No datasets yet", 10*time.Second)
	waitText("#dataset-count", "0 datasets", 10*time.Second)
	shot(t, ctx, shots, "datasets-empty")
	var inA, inB string
	for id, d := range cp.Devices() {
		switch {
		case d.Group == "line-a" && (inA == "" || id < inA):
			inA = id
		case d.Group == "line-b" && (inB == "" || id < inB):
			inB = id
		}
	}
	capture := func(dev string) {
		t.Helper()
		run("device "+dev, chromedp.Navigate(base+"/#/devices/"+dev))
		waitText("#cap-model", "wake", 30*time.Second)
		setValue("#cap-model", "wake")
		setValue("#cap-reason", "console test: false wakes at night")
		eval(`document.querySelector('#capture-form').scrollIntoView({block: 'center'}), true`)
		run("capture on "+dev, chromedp.Click(chromedp.CSS("#cap-submit")))
	}
	capture(inA)
	waitText("#cap-result", "capture_not_allowed", 10*time.Second)
	if got := text("#cap-result"); !strings.Contains(got, "group line-a has no capture policy") {
		t.Fatalf("the refused capture is not explained plainly: %q", got)
	}
	shot(t, ctx, shots, "device-capture-refused")
	capture(inB)
	waitText("#cap-result", "Capture requested: dataset", 10*time.Second)
	waitText("#device-datasets", "wake", 10*time.Second)
	run("datasets with one", chromedp.Navigate(base+"/#/datasets"))
	waitText("#dataset-list", inB, 10*time.Second)
	waitText("#dataset-count", "1 dataset", 10*time.Second)
	setValue("#ds-f-group", "line-a")
	waitText("#dataset-list", "No dataset matches", 10*time.Second)
	setValue("#ds-f-group", "line-b")
	waitText("#dataset-list", inB, 10*time.Second)
	shot(t, ctx, shots, "datasets")
	eval(`location.hash = document.querySelector('#dataset-list tbody a').getAttribute('href')`)
	waitText("#ds-lineage", "false wakes at night", 10*time.Second)
	waitText("#ds-lineage", inB, 10*time.Second)
	waitText("#ds-lineage", "admin", 10*time.Second)
	shot(t, ctx, shots, "dataset")
	dsID := strings.TrimPrefix(eval(`location.hash`).(string), "#/datasets/")
	run("ask to delete the dataset", chromedp.Click(chromedp.CSS("#ds-delete")), chromedp.WaitVisible(chromedp.CSS("#confirm-ok")))
	setValue("#ds-delete-reason", "test data")
	run("confirm delete", chromedp.Click(chromedp.CSS("#confirm-ok")))
	waitText("#ds-result", "deleted", 10*time.Second)
	if code, body := cp.Do("GET", "/api/v1/datasets/"+dsID, nil, nil); code != 404 {
		t.Fatalf("dataset %s after delete in the console: %d %s", dsID, code, body)
	}

	// Keys & trust: the control key's fingerprint and the release key.
	control, err := sign.LoadVerifier(cp.ControlPub())
	if err != nil {
		t.Fatal(err)
	}
	release, err := sign.LoadVerifier(k.PubPath)
	if err != nil {
		t.Fatal(err)
	}
	run("keys", chromedp.Navigate(base+"/#/keys"))
	waitText("#trust-control-fp", control.KeyID()[:8], 10*time.Second)
	if got := strings.ReplaceAll(text("#trust-control-fp"), " ", ""); got != control.KeyID() {
		t.Fatalf("keys page shows control key %q, want %s", got, control.KeyID())
	}
	waitText("#trust-release", release.KeyID()[:8], 10*time.Second)
	waitText("#trust-version", "pinned", 10*time.Second)
	waitText("#trust-bundle-recipient", "age1", 10*time.Second)
	shot(t, ctx, shots, "keys")

	// A viewer's session: the role is shown and the actions it may not take are hidden.
	var viewer struct{ Token string }
	if code, body := cp.Do("POST", "/api/v1/tokens", map[string]string{"name": "wall-screen", "role": "viewer"}, &viewer); code != 201 {
		t.Fatalf("create a viewer token: %d %s", code, body)
	}
	run("log out", chromedp.EmulateViewport(1400, 900), chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#token")))
	run("log in as viewer", chromedp.SendKeys(chromedp.CSS("#token"), viewer.Token), chromedp.Click(chromedp.CSS("#login-submit")), chromedp.WaitVisible(chromedp.CSS("#stats")))
	waitText("#principal", "wall-screen", 5*time.Second)
	waitText("#principal", "(viewer)", 5*time.Second)
	shown := func(sel string) any {
		return eval(fmt.Sprintf(`(() => { const el = document.querySelector(%q); return el ? getComputedStyle(el).display !== 'none' : 'absent' })()`, sel))
	}
	run("viewer: rollout", chromedp.Navigate(base+"/#/rollouts/"+rolloutID))
	waitText("#ro-decisions", "pause", 10*time.Second)
	for _, sel := range []string{"#ro-resume", "#ro-abort"} {
		if v := shown(sel); v != false {
			t.Errorf("viewer sees %s (shown: %v)", sel, v)
		}
	}
	run("viewer: groups", chromedp.Navigate(base+"/#/groups"))
	waitText("#group-list", "line-a", 10*time.Second)
	if v := shown(`button[data-rollback="line-a"]`); v != false {
		t.Errorf("viewer sees the rollback button (shown: %v)", v)
	}
	shot(t, ctx, shots, "groups-viewer")
	run("viewer: group settings", chromedp.Navigate(base+"/#/groups/line-b"))
	waitText("#gs-capture", "enabled", 10*time.Second)
	if v := shown("#group-settings-form"); v != false {
		t.Errorf("viewer sees the group settings form (shown: %v)", v)
	}
	run("viewer: device", chromedp.Navigate(base+"/#/devices/"+inB))
	waitText("#device-models", "wake", 10*time.Second)
	if v := shown("#capture-form"); v != false {
		t.Errorf("viewer sees the capture form (shown: %v)", v)
	}
	run("viewer: keys", chromedp.Navigate(base+"/#/keys"))
	waitText("#trust-control-fp", control.KeyID()[:8], 10*time.Second)

	// An operator's session: capture and rollback, but not group settings (admin).
	var operator struct{ Token string }
	if code, body := cp.Do("POST", "/api/v1/tokens", map[string]string{"name": "line-lead", "role": "operator"}, &operator); code != 201 {
		t.Fatalf("create an operator token: %d %s", code, body)
	}
	run("log out viewer", chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#token")))
	run("log in as operator", chromedp.SendKeys(chromedp.CSS("#token"), operator.Token), chromedp.Click(chromedp.CSS("#login-submit")), chromedp.WaitVisible(chromedp.CSS("#stats")))
	waitText("#principal", "(operator)", 5*time.Second)
	run("operator: group settings", chromedp.Navigate(base+"/#/groups/line-b"))
	waitText("#gs-capture", "enabled", 10*time.Second)
	if v := shown("#group-settings-form"); v != false {
		t.Errorf("operator sees the group settings form (shown: %v)", v)
	}
	if v := shown("#group-rollback"); v != true {
		t.Errorf("operator does not see the group rollback button (shown: %v)", v)
	}
	run("operator: device", chromedp.Navigate(base+"/#/devices/"+inB))
	waitText("#device-models", "wake", 10*time.Second)
	if v := shown("#capture-form"); v != true {
		t.Errorf("operator does not see the capture form (shown: %v)", v)
	}

	if p := logs.unexpected(); len(p) > 0 {
		t.Fatalf("the browser logged errors:\n%s", strings.Join(p, "\n"))
	}
}

// shot saves a PNG of the viewport as DIR/NAME.png.
func shot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Let the last poll's DOM changes paint.
	time.Sleep(300 * time.Millisecond)
	png, err := chromedp.Run(c, chromedp.CaptureScreenshot())
	if err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	if bytes.HasPrefix(png, []byte("iVBOR")) { // base64 from an older protocol binding
		png, _ = base64.StdEncoding.DecodeString(string(png))
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// buildWake builds a bundle of the wake-word model, optionally naming its parent for lineage.
func buildWake(t *testing.T, k fleettest.Keys, version, parent string) string {
	t.Helper()
	var buf bytes.Buffer
	o := builder.Options{ModelPath: filepath.Join(fleettest.Models(t), "hello_deepa.onnx"), Name: "wake", Version: version, Parent: parent, Golden: 2,
		Provenance: map[string]string{"trained_by": "console-test"}}
	if _, err := builder.Build(context.Background(), o, k.Release, &buf); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "wake-"+version+".bundle")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
