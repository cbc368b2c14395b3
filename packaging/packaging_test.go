// Package packaging holds no code, only the tests of what packaging/ ships: the systemd units,
// the .deb packages built by `make package`, the arm64 cross-build, the Dockerfiles and the
// compose stack (parsed and checked, since no container engine runs in CI).
//
// Builds are made once into a temporary folder shared by the tests (never into the checkout's
// bin/ or dist/, which other work uses) and removed at the end.
package packaging

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// testVersion is what the test builds stamp; scripts/package.sh must turn it into debVersion.
const (
	testVersion = "v1.2.3-4-gdeadbee"
	debVersion  = "1.2.3+4.gdeadbee"
)

var (
	repo string // repository root
	work string // shared temporary folder for builds
)

func TestMain(m *testing.M) {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	repo = filepath.Dir(wd)
	work, err = os.MkdirTemp("", "edgefleet-packaging-")
	if err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(work)
	os.Exit(code)
}

// once runs a build at most once per test binary and remembers its error, so that tests
// sharing it neither repeat it nor each report a different failure.
type once struct {
	sync.Once
	err error
}

func (o *once) do(t *testing.T, f func() error) {
	t.Helper()
	o.Do(func() { o.err = f() })
	if o.err != nil {
		t.Fatal(o.err)
	}
}

// runCmd runs a command in the repository root and returns its combined output.
func runCmd(dir string, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// makePkg runs a target of packaging/package.mk with every output under work.
func makePkg(target string) error {
	start := time.Now()
	_, err := runCmd(repo, []string{"GOTOOLCHAIN=local"}, "make", "-s", "-f", "packaging/package.mk", target,
		"PKG_BIN="+filepath.Join(work, "bin"), "DIST="+filepath.Join(work, "dist"),
		"VERSION="+testVersion,
		// zstd is 30x faster than the release default xz (21 s per arch); the content is the same.
		"DEB_COMPRESS=zstd")
	fmt.Fprintf(os.Stderr, "make %s: %.1fs\n", target, time.Since(start).Seconds())
	return err
}

var (
	hostBuild, arm64Build once
	debBuild              = map[string]*once{"amd64": {}, "arm64": {}}
)

// hostBins builds this machine's binaries (stripped, as packaged) and returns their folder.
func hostBins(t *testing.T) string {
	t.Helper()
	arch := runtime.GOARCH
	if arch != "amd64" && arch != "arm64" {
		t.Skipf("no packaging for %s", arch)
	}
	if arch == "arm64" {
		arm64Bins(t)
	} else {
		hostBuild.do(t, func() error { return makePkg("build-amd64") })
	}
	return filepath.Join(work, "bin", "linux-"+arch)
}

// haveCrossCC reports whether the arm64 cross compiler is installed; without it the arm64 tests
// skip, except in CI (CI=true), where a missing compiler is a broken set-up and fails.
func haveCrossCC(t *testing.T) {
	t.Helper()
	if runtime.GOARCH == "arm64" {
		return
	}
	if _, err := exec.LookPath("aarch64-linux-gnu-gcc"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("aarch64-linux-gnu-gcc missing in CI: apt-get install -y gcc-aarch64-linux-gnu")
		}
		t.Skip("aarch64-linux-gnu-gcc missing (apt-get install -y gcc-aarch64-linux-gnu)")
	}
}

func arm64Bins(t *testing.T) string {
	t.Helper()
	haveCrossCC(t)
	arm64Build.do(t, func() error { return makePkg("build-arm64") })
	return filepath.Join(work, "bin", "linux-arm64")
}

func debs(t *testing.T, arch string) (agent, controlplane string) {
	t.Helper()
	need(t, "dpkg-deb")
	if arch == "arm64" {
		arm64Bins(t)
	} else if runtime.GOARCH != "amd64" {
		t.Skip("amd64 packages are built on amd64 hosts")
	}
	debBuild[arch].do(t, func() error { return makePkg("package-" + arch) })
	dist := filepath.Join(work, "dist")
	return filepath.Join(dist, "edgefleet-agent_"+debVersion+"_"+arch+".deb"),
		filepath.Join(dist, "edgefleet-controlplane_"+debVersion+"_"+arch+".deb")
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s missing in CI", tool)
			}
			t.Skipf("%s missing", tool)
		}
	}
}

// ---------------------------------------------------------------------------------------------
// systemd units

// unitFile parses a systemd unit into section -> key -> values (keys may repeat).
func unitFile(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	sec := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			sec = line[1 : len(line)-1]
			out[sec] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || sec == "" {
				t.Fatalf("%s: bad line %q", path, line)
			}
			out[sec][strings.TrimSpace(k)] = append(out[sec][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// The agent's unit starts the launcher (`launch`), which runs `agent run` from its runtime slots.
var units = map[string]string{"edgefleet-agent": "launch", "edgefleet-controlplane": "serve"}

func TestUnitHardening(t *testing.T) {
	for name, verb := range units {
		t.Run(name, func(t *testing.T) {
			u := unitFile(t, filepath.Join("systemd", name+".service"))
			svc := u["Service"]
			want := map[string]string{
				"User": "edgefleet", "Group": "edgefleet", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
				"ProtectHome": "yes", "PrivateTmp": "yes", "CapabilityBoundingSet": "", "Restart": "on-failure",
				"EnvironmentFile": "-/etc/default/" + name, "Type": "exec",
				"ExecStart": "/usr/bin/" + name + " " + verb + " $" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")) + "_ARGS",
			}
			for k, v := range want {
				if got := svc[k]; len(got) != 1 || got[0] != v {
					t.Errorf("[Service] %s = %q, want %q", k, got, v)
				}
			}
			if !slices.Contains(svc["ReadWritePaths"], "/var/lib/edgefleet") {
				t.Errorf("ReadWritePaths = %q, want /var/lib/edgefleet", svc["ReadWritePaths"])
			}
			if d, err := time.ParseDuration(strings.Join(svc["RestartSec"], "")); err != nil || d <= 0 {
				t.Errorf("RestartSec = %q", svc["RestartSec"])
			}
			fams := strings.Fields(strings.Join(svc["RestrictAddressFamilies"], " "))
			if len(fams) == 0 || slices.Contains(fams, "AF_PACKET") || strings.HasPrefix(fams[0], "~") {
				t.Errorf("RestrictAddressFamilies = %q: want an allow-list without AF_PACKET", fams)
			}
			// The binaries do not speak sd_notify: a watchdog would kill them every WatchdogSec.
			if svc["WatchdogSec"] != nil || slices.Contains(svc["Type"], "notify") {
				t.Error("WatchdogSec/Type=notify set, but the binaries do not call sd_notify")
			}
			if !slices.Contains(u["Install"]["WantedBy"], "multi-user.target") {
				t.Error("not WantedBy=multi-user.target")
			}
		})
	}
}

// TestUnitsVerify lints the units with systemd-analyze: `verify` in a root that holds the
// system's units and stand-in binaries (verify insists that ExecStart exists), and
// `security --offline` for the exposure score.
func TestUnitsVerify(t *testing.T) {
	need(t, "systemd-analyze")
	root := t.TempDir()
	sys := filepath.Join(root, "lib", "systemd", "system")
	if err := os.MkdirAll(filepath.Dir(sys), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := runCmd(repo, nil, "cp", "-r", "/lib/systemd/system", filepath.Join(root, "lib", "systemd")); err != nil {
		t.Skip("no system units to verify against:", err)
	}
	if err := os.MkdirAll(filepath.Join(root, "usr", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name := range units {
		if err := os.WriteFile(filepath.Join(root, "usr", "bin", name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join("systemd", name+".service"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sys, name+".service"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		// A broken copy proves that verify reports problems in this set-up at all.
		bad := bytes.Replace(b, []byte("[Service]"), []byte("[Service]\nNoSuchKey=1"), 1)
		if err := os.WriteFile(filepath.Join(sys, name+"-broken.service"), bad, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name := range units {
		out, err := runCmd(repo, nil, "systemd-analyze", "verify", "--root="+root, name+".service")
		if err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("systemd-analyze verify %s: %v %s", name, err, out)
		}
		out, _ = runCmd(repo, nil, "systemd-analyze", "verify", "--root="+root, name+"-broken.service")
		if !strings.Contains(out, "NoSuchKey") {
			t.Errorf("verify did not flag the broken unit: %q", out)
		}
		out, err = runCmd(repo, nil, "systemd-analyze", "security", "--offline=yes", filepath.Join(repo, "packaging", "systemd", name+".service"))
		if err != nil {
			t.Fatalf("systemd-analyze security: %v", err)
		}
		m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no exposure level in %q", out)
		}
		// 0 is a sealed box, 10 an unprotected root service; below 3 systemd calls it "OK".
		if score, _ := strconv.ParseFloat(m[1], 64); score >= 3 {
			t.Errorf("%s exposure %.1f, want < 3", name, score)
		}
		t.Logf("%s: systemd exposure %s", name, m[1])
	}
}

// ---------------------------------------------------------------------------------------------
// flags: what the packaging passes must be what the binaries accept

var helpFlag = regexp.MustCompile(`(?m)^\s+--([a-z0-9-]+)\s+\[(EDGEFLEET_[A-Z0-9_]+)\]`)

// flagsOf returns flag name -> environment variable from `BIN VERB --help`.
func flagsOf(t *testing.T, bin, verb string) map[string]string {
	t.Helper()
	out, err := runCmd(repo, nil, bin, verb, "--help")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, f := range helpFlag.FindAllStringSubmatch(out, -1) {
		m[f[1]] = f[2]
	}
	if len(m) < 5 {
		t.Fatalf("%s %s --help: too few flags parsed from %q", bin, verb, out)
	}
	return m
}

func envNames(flags map[string]string) map[string]bool {
	m := map[string]bool{}
	for _, e := range flags {
		m[e] = true
	}
	return m
}

// TestDefaultFilesNameRealFlags checks every EDGEFLEET_ variable in /etc/default/* (set or
// commented out) against the binary's --help: a renamed flag must not silently stop working.
func TestDefaultFilesNameRealFlags(t *testing.T) {
	bins := hostBins(t)
	for name, verb := range units {
		// `agent launch` takes every `agent run` flag (and passes them on); its --help lists only
		// its own two, so the run flags are read from `run`.
		if verb == "launch" {
			verb = "run"
		}
		env := envNames(flagsOf(t, filepath.Join(bins, strings.TrimPrefix(name, "edgefleet-")), verb))
		if name == "edgefleet-agent" {
			env["EDGEFLEET_TRIAL_TIMEOUT"] = true // read by launch itself (cmd/agent/launch.go)
		}
		b, err := os.ReadFile(filepath.Join("deb", name, "default"))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`(?m)^#?(EDGEFLEET_[A-Z0-9_]+)=`).FindAllStringSubmatch(string(b), -1) {
			if strings.HasSuffix(m[1], "_ARGS") {
				continue // extra flags for the unit's ExecStart, not a flag itself
			}
			if !env[m[1]] {
				t.Errorf("deb/%s/default: %s is no flag of %s %s", name, m[1], name, verb)
			}
		}
	}
}

// ---------------------------------------------------------------------------------------------
// .deb packages

func TestDebAmd64(t *testing.T) { checkDebs(t, "amd64") }
func TestDebArm64(t *testing.T) { checkDebs(t, "arm64") }

type debEntry struct{ mode, owner string }

func checkDebs(t *testing.T, arch string) {
	agentDeb, cpDeb := debs(t, arch)
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
	for _, c := range []struct {
		deb, name, verb string
		files           []string
	}{
		{agentDeb, "edgefleet-agent", "run", []string{"/usr/lib/edgefleet/libonnxruntime.so.1"}},
		{cpDeb, "edgefleet-controlplane", "serve", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, err := os.Stat(c.deb)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %.1f MB", filepath.Base(c.deb), float64(st.Size())/1e6)
			info, err := runCmd(repo, nil, "dpkg-deb", "-f", c.deb, "Package", "Version", "Architecture", "Depends")
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"Package: " + c.name, "Version: " + debVersion, "Architecture: " + arch, "libc6 (>= 2.34)"} {
				if !strings.Contains(info, want) {
					t.Errorf("control lacks %q:\n%s", want, info)
				}
			}

			list, err := runCmd(repo, nil, "dpkg-deb", "-c", c.deb)
			if err != nil {
				t.Fatal(err)
			}
			entries := map[string]debEntry{}
			for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
				f := strings.Fields(line)
				if len(f) < 6 {
					t.Fatalf("odd dpkg-deb -c line %q", line)
				}
				entries[strings.TrimSuffix(strings.TrimPrefix(f[5], "."), "/")] = debEntry{f[0], f[1]}
			}
			want := map[string]string{
				"/usr/bin/" + c.name:                         "-rwxr-xr-x",
				"/lib/systemd/system/" + c.name + ".service": "-rw-r--r--",
				"/etc/default/" + c.name:                     "-rw-------",
				"/usr/share/doc/" + c.name + "/copyright":    "-rw-r--r--",
			}
			for _, f := range c.files {
				want[f] = "-rw-r--r--"
			}
			for path, mode := range want {
				e, ok := entries[path]
				if !ok {
					t.Errorf("%s missing from the package", path)
					continue
				}
				if e.mode != mode || e.owner != "root/root" {
					t.Errorf("%s: %s %s, want %s root/root", path, e.mode, e.owner, mode)
				}
			}
			if c.name == "edgefleet-controlplane" {
				if _, ok := entries["/usr/lib/edgefleet/libonnxruntime.so.1"]; ok {
					t.Error("controlplane package ships the ORT library: it would conflict with edgefleet-agent's")
				}
			}

			// Maintainer scripts: present, executable, valid sh; conffiles lists the default file.
			ctl := t.TempDir()
			if _, err := runCmd(repo, nil, "dpkg-deb", "-e", c.deb, ctl); err != nil {
				t.Fatal(err)
			}
			for _, s := range []string{"postinst", "prerm", "postrm"} {
				p := filepath.Join(ctl, s)
				st, err := os.Stat(p)
				if err != nil {
					t.Errorf("%s missing", s)
					continue
				}
				if st.Mode().Perm()&0o111 != 0o111 {
					t.Errorf("%s mode %v: not executable", s, st.Mode())
				}
				if out, err := runCmd(repo, nil, "sh", "-n", p); err != nil {
					t.Errorf("%s: %s", s, out)
				}
			}
			conf, err := os.ReadFile(filepath.Join(ctl, "conffiles"))
			if err != nil || strings.TrimSpace(string(conf)) != "/etc/default/"+c.name {
				t.Errorf("conffiles = %q (%v)", conf, err)
			}

			// Payload: ELF files of the package's architecture; the binary runs (natively or
			// under qemu) and reports the stamped version.
			root := t.TempDir()
			if _, err := runCmd(repo, nil, "dpkg-deb", "-x", c.deb, root); err != nil {
				t.Fatal(err)
			}
			for _, f := range append([]string{"/usr/bin/" + c.name}, c.files...) {
				ef, err := elf.Open(filepath.Join(root, f))
				if err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				if ef.Machine != machine {
					t.Errorf("%s: %v, want %v", f, ef.Machine, machine)
				}
				ef.Close()
			}
			def, err := os.ReadFile(filepath.Join(root, "etc", "default", c.name))
			if err != nil {
				t.Fatal(err)
			}
			if c.name == "edgefleet-agent" && !strings.Contains(string(def), "\nEDGEFLEET_ORT_LIB=/usr/lib/edgefleet/libonnxruntime.so.1\n") {
				t.Error("default config does not point EDGEFLEET_ORT_LIB at the packaged library")
			}
			if run := runner(t, arch); run != nil {
				out, err := runCmd(repo, nil, run[0], append(run[1:], filepath.Join(root, "usr", "bin", c.name), "version")...)
				if err != nil || !strings.Contains(out, testVersion) {
					t.Errorf("%s version: %q %v", c.name, out, err)
				}
			}
		})
	}
}

// runner returns the command prefix that runs a binary of arch here: nothing natively, qemu-user
// with the arm64 loader for arm64 on other machines, nil when neither is possible.
func runner(t *testing.T, arch string) []string {
	t.Helper()
	if arch == runtime.GOARCH {
		return []string{"env"}
	}
	if arch != "arm64" {
		return nil
	}
	var qemu string
	for _, q := range []string{"qemu-aarch64-static", "qemu-aarch64"} {
		if p, err := exec.LookPath(q); err == nil {
			qemu = p
			break
		}
	}
	if qemu == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-user missing in CI: apt-get install -y qemu-user-static")
		}
		t.Log("qemu-aarch64 missing (apt-get install -y qemu-user-static): arm64 binaries not run")
		return nil
	}
	// The cross toolchain's libc6-arm64-cross has the loader and libc in /usr/aarch64-linux-gnu;
	// with multiarch libc6:arm64 installed instead, qemu finds /lib/ld-linux-aarch64.so.1 itself.
	if _, err := os.Stat("/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1"); err == nil {
		return []string{qemu, "-L", "/usr/aarch64-linux-gnu"}
	}
	if _, err := os.Stat("/lib/ld-linux-aarch64.so.1"); err == nil {
		return []string{qemu}
	}
	t.Log("no arm64 loader (libc6-arm64-cross or libc6:arm64): arm64 binaries not run")
	return nil
}

// TestMaintainerScripts runs the agent's postinst twice and prerm/postrm with stand-ins for
// every command that would change this machine, and checks what they asked for: the user is
// created once (idempotent), the state folder every time, systemd only when it runs.
func TestMaintainerScripts(t *testing.T) {
	dir := t.TempDir()
	shims := filepath.Join(dir, "bin")
	log := filepath.Join(dir, "log")
	if err := os.Mkdir(shims, 0o755); err != nil {
		t.Fatal(err)
	}
	shim := func(name, body string) {
		s := "#!/bin/sh\necho \"" + name + " $*\" >>\"$SHIM_LOG\"\n" + body + "\n"
		if err := os.WriteFile(filepath.Join(shims, name), []byte(s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// getent answers "exists" once the matching add command has been logged.
	shim("getent", `case "$1" in group) grep -q '^addgroup ' "$SHIM_LOG" ;; passwd) grep -q '^adduser ' "$SHIM_LOG" ;; *) exit 2 ;; esac`)
	for _, c := range []string{"addgroup", "adduser", "install", "systemctl", "rm", "rmdir"} {
		shim(c, "exit 0")
	}
	systemdRuns := false
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		systemdRuns = true
	}
	env := []string{"SHIM_LOG=" + log, "PATH=" + shims + ":/usr/bin:/bin"}
	for name := range units {
		os.Remove(log)
		steps := [][]string{{"postinst", "configure"}, {"postinst", "configure", "1.0.0"}, {"prerm", "remove"}, {"postrm", "remove"}, {"postrm", "purge"}}
		for _, s := range steps {
			if out, err := runCmd(repo, env, "sh", append([]string{filepath.Join("packaging", "deb", name, s[0])}, s[1:]...)...); err != nil {
				t.Fatalf("%s %v: %v %s", name, s, err, out)
			}
		}
		b, _ := os.ReadFile(log)
		got := string(b)
		if n := strings.Count(got, "adduser "); n != 1 {
			t.Errorf("%s: adduser ran %d times over two configures, want 1:\n%s", name, n, got)
		}
		if n := strings.Count(got, "install -d -m 0750 -o edgefleet -g edgefleet /var/lib/edgefleet /var/lib/edgefleet/"); n != 2 {
			t.Errorf("%s: state folder created %d times, want 2:\n%s", name, n, got)
		}
		if !systemdRuns {
			for _, l := range strings.Split(got, "\n") {
				if strings.HasPrefix(l, "systemctl ") && !strings.HasPrefix(l, "systemctl disable ") {
					t.Errorf("%s: %q without a running systemd", name, l)
				}
			}
		}
		purged := strings.Contains(got, "rm -rf /var/lib/edgefleet/agent")
		if purged != (name == "edgefleet-agent") {
			t.Errorf("%s: purge removed state: %v:\n%s", name, purged, got)
		}
	}
}

// ---------------------------------------------------------------------------------------------
// arm64 cross-build

func TestBuildArm64(t *testing.T) {
	bins := arm64Bins(t)
	for _, b := range []string{"agent", "controlplane"} {
		p := filepath.Join(bins, b)
		if _, err := exec.LookPath("readelf"); err == nil {
			out, err := runCmd(repo, nil, "readelf", "-h", p)
			if err != nil || !regexp.MustCompile(`Machine:\s+AArch64`).MatchString(out) {
				t.Errorf("readelf -h %s: %v\n%s", b, err, out)
			}
		}
		ef, err := elf.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		libs, err := ef.ImportedLibraries()
		ef.Close()
		if err != nil {
			t.Fatal(err)
		}
		// onnxruntime_go dlopen()s the library: a link-time dependency would make the binary
		// unusable on a device whose ORT lives elsewhere (Jetson's GPU build).
		for _, l := range libs {
			if strings.Contains(l, "onnxruntime") {
				t.Errorf("%s links %s at build time", b, l)
			}
		}
		t.Logf("%s: needs %v", b, libs)
	}

	run := runner(t, "arm64")
	if run == nil {
		t.Skip("cannot run arm64 binaries here")
	}
	arm := func(args ...string) (string, error) {
		return runCmd(repo, nil, run[0], append(run[1:], args...)...)
	}
	if out, err := arm(filepath.Join(bins, "agent"), "version"); err != nil || !strings.Contains(out, testVersion) {
		t.Fatalf("arm64 agent version: %q %v", out, err)
	}

	// A bundle built by this machine's control plane verifies on the arm64 one, and a corrupted
	// copy does not.
	host := filepath.Join(hostBins(t), "controlplane")
	ortEnv := []string{"EDGEFLEET_ORT_LIB=" + hostORT(t)}
	model := filepath.Join(os.Getenv("HOME"), ".cache", "edgefleet", "models", "hello_deepa.onnx")
	if c := os.Getenv("EDGEFLEET_CACHE"); c != "" {
		model = filepath.Join(c, "models", "hello_deepa.onnx")
	}
	if _, err := os.Stat(model); err != nil {
		if _, err := runCmd(repo, nil, "scripts/fetch-models.sh"); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	if _, err := runCmd(dir, nil, host, "keys", "generate", "--out", "keys"); err != nil {
		t.Fatal(err)
	}
	if _, err := runCmd(dir, ortEnv, host, "bundle", "build", "--model", model, "--name", "wake", "--version", "1.0.0",
		"--key", "keys/release.key", "--out", "wake.bundle"); err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(bins, "controlplane")
	out, err := arm(cp, "bundle", "verify", "--key", filepath.Join(dir, "keys", "release.pub"), filepath.Join(dir, "wake.bundle"))
	if err != nil || !strings.HasPrefix(out, "OK ") {
		t.Fatalf("arm64 bundle verify: %q %v", out, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "wake.bundle"))
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff // inside the model's blocks
	bad := filepath.Join(dir, "bad.bundle")
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := arm(cp, "bundle", "verify", "--key", filepath.Join(dir, "keys", "release.pub"), bad); err == nil {
		t.Fatalf("arm64 verify accepted a corrupted bundle: %q", out)
	}
}

func hostORT(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("EDGEFLEET_ORT_LIB"); p != "" {
		return p
	}
	out, err := runCmd(repo, nil, "scripts/fetch-ort.sh")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1]
}

// ---------------------------------------------------------------------------------------------
// Dockerfiles

type stage struct {
	name, image string
	lines       []string // instructions after FROM, continuation lines joined
}

// dockerfile parses the instructions of a Dockerfile into stages, with ARG defaults declared
// before the first FROM substituted into FROM lines (as the builder does).
func dockerfile(t *testing.T, path string) []stage {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ins []string
	cur := ""
	for _, l := range strings.Split(string(b), "\n") {
		tl := strings.TrimSpace(l)
		if strings.HasPrefix(tl, "#") || (tl == "" && cur == "") {
			continue
		}
		if strings.HasSuffix(tl, "\\") {
			cur += strings.TrimSuffix(tl, "\\") + " "
			continue
		}
		ins = append(ins, cur+tl)
		cur = ""
	}
	args := map[string]string{}
	var stages []stage
	for _, in := range ins {
		f := strings.Fields(in)
		if len(f) == 0 {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "ARG":
			if len(stages) == 0 {
				k, v, _ := strings.Cut(f[1], "=")
				args[k] = v
				continue
			}
		case "FROM":
			rest := f[1:]
			if len(rest) > 0 && strings.HasPrefix(rest[0], "--platform=") {
				rest = rest[1:]
			}
			s := stage{image: os.Expand(rest[0], func(k string) string { return args[k] })}
			if len(rest) == 3 && strings.EqualFold(rest[1], "AS") {
				s.name = rest[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			t.Fatalf("%s: %q before the first FROM", path, in)
		}
		stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, in)
	}
	return stages
}

// pinned reports whether an image reference names a tag other than latest (or a digest).
func pinned(image string) bool {
	if strings.Contains(image, "@sha256:") {
		return true
	}
	i := strings.LastIndex(image, ":")
	if i < 0 || strings.Contains(image[i:], "/") {
		return false
	}
	tag := image[i+1:]
	return tag != "" && tag != "latest" && !strings.Contains(tag, "$")
}

func TestDockerfiles(t *testing.T) {
	for _, c := range []struct{ file, bin string }{
		{"Dockerfile.agent", "/usr/bin/edgefleet-agent"},
		{"Dockerfile.controlplane", "/usr/bin/edgefleet-controlplane"},
	} {
		t.Run(c.file, func(t *testing.T) {
			stages := dockerfile(t, filepath.Join("docker", c.file))
			if len(stages) < 2 {
				t.Fatalf("%d stages, want a multi-stage build", len(stages))
			}
			names := map[string]bool{}
			for i, s := range stages {
				if !pinned(s.image) {
					t.Errorf("stage %d FROM %q: pin a tag (not latest)", i, s.image)
				}
				for _, l := range s.lines {
					m := regexp.MustCompile(`(?i)^COPY\s+.*--from=(\S+)`).FindStringSubmatch(l)
					if m == nil {
						continue
					}
					if _, err := strconv.Atoi(m[1]); err == nil || !names[m[1]] {
						t.Errorf("stage %d: %q copies from %q, which is no earlier named stage", i, l, m[1])
					}
				}
				if s.name != "" {
					names[s.name] = true
				}
			}
			final := stages[len(stages)-1]
			var user, entry string
			copied := map[string]bool{}
			for _, l := range final.lines {
				f := strings.Fields(l)
				switch strings.ToUpper(f[0]) {
				case "USER":
					user = f[1]
				case "ENTRYPOINT":
					entry = l
				case "COPY":
					copied[f[len(f)-1]] = true
				}
			}
			if u, _, _ := strings.Cut(user, ":"); u == "" || u == "root" || u == "0" {
				t.Errorf("final stage runs as %q, want a non-root USER", user)
			}
			if !strings.Contains(entry, `"`+c.bin+`"`) || !copied[c.bin] {
				t.Errorf("ENTRYPOINT %q does not run the copied %s", entry, c.bin)
			}
			if !copied["/usr/lib/edgefleet/libonnxruntime.so.1"] {
				t.Error("the ONNX Runtime library is not copied into the final stage")
			}
			if _, err := os.Stat(filepath.Join("docker", c.file+".dockerignore")); err != nil {
				t.Error("no .dockerignore next to it: bin/ and .git would be sent as context")
			}
		})
	}
}

// ---------------------------------------------------------------------------------------------
// compose stack and Prometheus

type service struct {
	Image       string `yaml:"image"`
	Build       *struct{ Context, Dockerfile string }
	Command     []string          `yaml:"command"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Environment map[string]string `yaml:"environment"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Ports   []string `yaml:"ports"`
	Volumes []string `yaml:"volumes"`
	Secrets []string `yaml:"secrets"`
}

type composeFile struct {
	Services map[string]service   `yaml:"services"`
	Volumes  map[string]any       `yaml:"volumes"`
	Secrets  map[string]yaml.Node `yaml:"secrets"`
}

// interpolate applies compose's ${VAR:-default} / ${VAR:?message} with no variables set,
// the way a fresh checkout sees it ("" for required ones; they are checked separately).
func interpolate(s string) string {
	return regexp.MustCompile(`\$\{([A-Z0-9_]+)(?::([-?])([^}]*))?\}`).ReplaceAllStringFunc(s, func(m string) string {
		p := regexp.MustCompile(`\$\{([A-Z0-9_]+)(?::([-?])([^}]*))?\}`).FindStringSubmatch(m)
		if p[2] == "-" {
			return p[3]
		}
		return ""
	})
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return c
}

func TestCompose(t *testing.T) {
	c := loadCompose(t)
	var agents []string
	for name := range c.Services {
		if strings.HasPrefix(name, "agent") {
			agents = append(agents, name)
		}
	}
	if len(agents) < 3 {
		t.Errorf("%d agents, want at least 3", len(agents))
	}
	for _, s := range []string{"mosquitto", "controlplane", "prometheus"} {
		if _, ok := c.Services[s]; !ok {
			t.Errorf("service %s missing", s)
		}
	}

	hostPorts := map[string]string{}
	for name, s := range c.Services {
		if s.Image == "" && s.Build == nil {
			t.Errorf("%s: no image and no build", name)
		}
		if s.Image != "" && s.Build == nil && !pinned(interpolate(s.Image)) {
			t.Errorf("%s: image %q not pinned to a tag", name, s.Image)
		}
		if s.Build != nil {
			if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
				t.Errorf("%s: build: %v", name, err)
			}
		}
		for dep := range s.DependsOn {
			if _, ok := c.Services[dep]; !ok || dep == name {
				t.Errorf("%s depends on %q, which is no other service", name, dep)
			}
		}
		for _, p := range s.Ports {
			// host_ip:host_port:container_port: lab ports only on the host's loopback.
			parts := strings.Split(p, ":")
			if len(parts) != 3 || net.ParseIP(parts[0]) == nil || !net.ParseIP(parts[0]).IsLoopback() {
				t.Errorf("%s: port %q: want 127.0.0.1:HOST:CONTAINER", name, p)
				continue
			}
			for _, n := range parts[1:] {
				if v, err := strconv.Atoi(n); err != nil || v < 1 || v > 65535 {
					t.Errorf("%s: port %q out of range", name, p)
				}
			}
			if other, dup := hostPorts[parts[1]]; dup {
				t.Errorf("host port %s published by %s and %s", parts[1], other, name)
			}
			hostPorts[parts[1]] = name
		}
		seen := map[string]bool{}
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) < 2 || len(parts) > 3 || !strings.HasPrefix(parts[1], "/") || (len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw") {
				t.Errorf("%s: volume %q: want SOURCE:/ABSOLUTE[:ro|rw]", name, v)
				continue
			}
			if seen[parts[1]] {
				t.Errorf("%s: %s mounted twice", name, parts[1])
			}
			seen[parts[1]] = true
			if strings.HasPrefix(parts[0], ".") {
				if _, err := os.Stat(parts[0]); err != nil {
					t.Errorf("%s: bind mount source %v", name, err)
				}
			} else if _, ok := c.Volumes[parts[0]]; !ok {
				t.Errorf("%s: named volume %q not declared", name, parts[0])
			}
		}
		for _, sec := range s.Secrets {
			if _, ok := c.Secrets[sec]; !ok {
				t.Errorf("%s: secret %q not declared", name, sec)
			}
		}
		for k, v := range s.Environment {
			if strings.Contains(k, "PASSWORD") || strings.Contains(k, "TOKEN") {
				if !strings.Contains(v, ":?") {
					t.Errorf("%s: %s=%q: secrets must come from the environment, required (${VAR:?...})", name, k, v)
				}
			}
		}
	}

	// The flags the stack passes are flags the binaries accept.
	bins := hostBins(t)
	agentFlags := flagsOf(t, filepath.Join(bins, "agent"), "run")
	cpFlags := flagsOf(t, filepath.Join(bins, "controlplane"), "serve")
	checkFlags := func(svc string, cmd []string, verb string, flags map[string]string) {
		if len(cmd) == 0 || cmd[0] != verb {
			t.Errorf("%s: command %q does not start with %q", svc, cmd, verb)
			return
		}
		for _, a := range cmd[1:] {
			if !strings.HasPrefix(a, "-") {
				continue
			}
			f, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if _, ok := flags[f]; !ok {
				t.Errorf("%s: %s is no flag of %s", svc, a, verb)
			}
		}
	}
	ids := map[string]bool{}
	for _, a := range agents {
		s := c.Services[a]
		checkFlags(a, s.Command, "run", agentFlags)
		env := envNames(agentFlags)
		for k := range s.Environment {
			if !env[k] {
				t.Errorf("%s: environment %s is no agent flag", a, k)
			}
		}
		i := slices.Index(s.Command, "--id")
		if i < 0 || i+1 >= len(s.Command) {
			t.Errorf("%s: no --id", a)
			continue
		}
		if ids[s.Command[i+1]] {
			t.Errorf("device id %s used twice", s.Command[i+1])
		}
		ids[s.Command[i+1]] = true
		if s.Environment["EDGEFLEET_BROKER"] != "mqtt://mosquitto:1883" {
			t.Errorf("%s: broker %q", a, s.Environment["EDGEFLEET_BROKER"])
		}
		if _, ok := s.DependsOn["mosquitto"]; !ok {
			t.Errorf("%s does not depend on mosquitto", a)
		}
	}
	cp := c.Services["controlplane"]
	checkFlags("controlplane", cp.Command, "serve", cpFlags)
	if i := slices.Index(cp.Command, "--broker"); i < 0 || cp.Command[i+1] != "mqtt://mosquitto:1883" {
		t.Errorf("controlplane command %q: want --broker mqtt://mosquitto:1883", cp.Command)
	}
	for k := range cp.Environment {
		if !envNames(cpFlags)[k] {
			t.Errorf("controlplane: environment %s is no serve flag", k)
		}
	}
	// Every device id has an account at the broker.
	for id := range ids {
		if !slices.Contains(strings.Fields(c.Services["mosquitto"].Environment["DEVICES"]), id) {
			t.Errorf("device %s has no Mosquitto account (DEVICES)", id)
		}
	}
}

func TestPrometheusScrapesControlPlane(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Global        map[string]string `yaml:"global"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			Scheme        string `yaml:"scheme"`
			Authorization struct {
				Type            string `yaml:"type"`
				CredentialsFile string `yaml:"credentials_file"`
			} `yaml:"authorization"`
			StaticConfigs []struct {
				Targets []string          `yaml:"targets"`
				Labels  map[string]string `yaml:"labels"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true) // a misspelt key would be ignored by Prometheus' loader too late
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	c := loadCompose(t)
	found := false
	for _, sc := range p.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, tg := range st.Targets {
				host, port, err := net.SplitHostPort(tg)
				if err != nil {
					t.Errorf("target %q: %v", tg, err)
					continue
				}
				if host != "controlplane" {
					continue
				}
				found = true
				if sc.MetricsPath != "/metrics" {
					t.Errorf("metrics_path %q", sc.MetricsPath)
				}
				// The port the control plane listens on inside its container (its image's
				// EDGEFLEET_HTTP, or --http in the compose command).
				listen := "0.0.0.0:8080"
				if i := slices.Index(c.Services["controlplane"].Command, "--http"); i >= 0 {
					listen = c.Services["controlplane"].Command[i+1]
				}
				if _, lp, _ := net.SplitHostPort(listen); lp != port {
					t.Errorf("scrapes port %s, control plane listens on %s", port, listen)
				}
				// /metrics needs a token: it must be a secret mounted into the prometheus service.
				cf := sc.Authorization.CredentialsFile
				if sc.Authorization.Type != "Bearer" || !strings.HasPrefix(cf, "/run/secrets/") ||
					!slices.Contains(c.Services["prometheus"].Secrets, strings.TrimPrefix(cf, "/run/secrets/")) {
					t.Errorf("authorization %+v: want a Bearer credentials_file from a secret of the prometheus service", sc.Authorization)
				}
			}
		}
	}
	if !found {
		t.Error("no scrape target controlplane:PORT")
	}
	if !slices.Contains(c.Services["prometheus"].Volumes, "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro") {
		t.Error("compose does not mount prometheus/prometheus.yml")
	}
}

// TestComposeMosquittoConfig runs the compose stack's Mosquitto start script against this
// machine's Mosquitto: the shipped config, adapted, must load, refuse anonymous clients and
// wrong passwords, and accept the generated accounts.
func TestComposeMosquittoConfig(t *testing.T) {
	need(t, "mosquitto", "mosquitto_pub", "mosquitto_passwd")
	dir, err := os.MkdirTemp("", "edgefleet-mosq-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Mosquitto drops root for the mosquitto user, which must reach these files.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	env := []string{"CONF_IN=packaging/mosquitto/mosquitto.conf", "OUT=" + dir + "/config", "DATA=" + dir + "/data",
		"CERTS=" + dir + "/certs", "PORT=" + port, "CONTROLPLANE_PASSWORD=cp-secret", "DEVICE_PASSWORD=dev-secret",
		"DEVICES=dev-0001 dev-0002"}
	if out, err := runCmd(repo, env, "sh", "packaging/docker/mosquitto-compose.sh", "prepare"); err != nil {
		t.Fatal(err, out)
	}
	conf, err := os.ReadFile(filepath.Join(dir, "config", "edgefleet.conf"))
	if err != nil {
		t.Fatal(err)
	}
	// No loopback-only listener, no TLS listener without certificates, no host paths.
	for _, gone := range []string{`(?m)^listener .*127\.0\.0\.1`, `(?m)^listener 8883`, `(?m)^[^#].*/etc/mosquitto`, `(?m)^[^#].*/var/lib/mosquitto`} {
		if regexp.MustCompile(gone).Match(conf) {
			t.Errorf("adapted config still matches %s", gone)
		}
	}
	mq := exec.Command("mosquitto", "-c", filepath.Join(dir, "config", "edgefleet.conf"))
	var logs bytes.Buffer
	mq.Stdout, mq.Stderr = &logs, &logs
	if err := mq.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mq.Process.Kill(); _ = mq.Wait() })
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not listen: %s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	pub := func(user, pass, topic string) error {
		args := []string{"-h", "127.0.0.1", "-p", port, "-q", "1", "-t", topic, "-m", "x"}
		if user != "" {
			args = append(args, "-u", user, "-P", pass, "-i", user)
		}
		_, err := runCmd(repo, nil, "mosquitto_pub", args...)
		return err
	}
	if err := pub("controlplane-1", "cp-secret", "edgefleet/trust"); err != nil {
		t.Errorf("control plane refused: %v\n%s", err, logs.String())
	}
	if err := pub("dev-0002", "dev-secret", "edgefleet/devices/dev-0002/status"); err != nil {
		t.Errorf("device refused: %v", err)
	}
	if err := pub("", "", "edgefleet/trust"); err == nil {
		t.Error("anonymous client accepted")
	}
	if err := pub("dev-0001", "wrong", "edgefleet/trust"); err == nil {
		t.Error("wrong password accepted")
	}
}
