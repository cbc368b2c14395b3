package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Config of the launcher.
type Config struct {
	DataDir string
	// Installed is the binary that runs when no runtime slot is active (default: this executable).
	Installed string
	// InstalledVersion is its version; when it differs from the one recorded in launch.json, the
	// package was upgraded and the installed binary runs (see packageChanged).
	InstalledVersion string
	// Args follow `run` on every agent's command line.
	Args []string
	// TrialTimeout is how long a new agent has to report healthy (default 2 minutes).
	TrialTimeout time.Duration
	// MaxTrialStarts is how many times a new agent may start during its trial (default 3).
	MaxTrialStarts int
	// StopTimeout is how long an agent has to exit after SIGTERM before SIGKILL (default 25 s).
	StopTimeout    time.Duration
	Logger         *slog.Logger
	Stdout, Stderr io.Writer
}

// ErrUsage is returned when the agent exits with status 2 (a bad flag or setting) outside a
// trial: restarting would only repeat it.
var ErrUsage = errors.New("the agent refused its settings (exit status 2)")

type launcher struct {
	cfg Config
	log *slog.Logger
}

// Run supervises the agent until ctx ends, then stops it with SIGTERM.
func Run(ctx context.Context, cfg Config) error {
	if cfg.DataDir == "" {
		return errors.New("agent launch needs the data folder: --data DIR or EDGEFLEET_DATA")
	}
	if cfg.Installed == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find the installed agent binary: %w", err)
		}
		cfg.Installed = exe
	}
	if cfg.TrialTimeout <= 0 {
		cfg.TrialTimeout = 2 * time.Minute
	}
	if cfg.MaxTrialStarts <= 0 {
		cfg.MaxTrialStarts = 3
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 25 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if err := os.MkdirAll(RuntimeDir(cfg.DataDir), 0o700); err != nil {
		return fmt.Errorf("create runtime folder: %w", err)
	}
	l := &launcher{cfg: cfg, log: cfg.Logger.With("component", "launcher")}
	if err := l.packageChanged(); err != nil {
		return err
	}
	return l.loop(ctx)
}

// save writes launch.json, stamped with the installed binary's version.
func (l *launcher) save(st State) error {
	st.Installed = l.cfg.InstalledVersion
	if err := writeState(l.cfg.DataDir, st); err != nil {
		return fmt.Errorf("persist launch state: %w", err)
	}
	return nil
}

// packageChanged makes the installed binary the active agent when the package manager replaced
// it since launch.json was written: an apt upgrade must take effect, not hide behind an older
// runtime slot. The slot stays as Previous, so the agent can go back to it without a download if
// its desired state still names that runtime bundle (the desired state has the last word).
func (l *launcher) packageChanged() error {
	st, err := ReadState(l.cfg.DataDir)
	if err != nil || st.Installed == "" || l.cfg.InstalledVersion == "" || st.Installed == l.cfg.InstalledVersion {
		return nil
	}
	if st.Active == nil && st.Trial == nil {
		return l.save(st)
	}
	was := st.Active
	if st.Trial != nil {
		was = &st.Trial.Slot
	}
	l.log.Info("the agent package changed; running the installed agent", "from", st.Installed, "to", l.cfg.InstalledVersion, "slot_was", was.Name)
	st.Last = &Outcome{Bundle: was.Bundle, Version: was.Version, Result: ResultSuperseded, Reason: ReasonPackage,
		Message: fmt.Sprintf("the agent package changed from %s to %s; the installed agent runs", st.Installed, l.cfg.InstalledVersion), At: time.Now().UTC()}
	if st.Active != nil {
		st.Previous = st.Active
	}
	st.Active, st.Trial = nil, nil
	os.Remove(filepath.Join(RuntimeDir(l.cfg.DataDir), HealthyFile))
	return l.save(st)
}

func (l *launcher) loop(ctx context.Context) error {
	backoff := time.Second
	for ctx.Err() == nil {
		st, err := ReadState(l.cfg.DataDir)
		if err != nil {
			// launch.json is written atomically, so this is a damaged disk or a person's edit;
			// the installed binary is the one thing known to work.
			l.log.Error("launch state unreadable; starting the installed agent", "err", err)
			st = State{}
		}
		slotName, bin, ortLib, trial, err := l.choose(&st)
		if err != nil {
			return err
		}
		started := time.Now()
		code, why, err := l.runOnce(ctx, slotName, bin, ortLib, trial)
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		switch why {
		case endCommitted:
			trial = nil // committed, then exited: from here on it is the active agent
		case endDeadline:
			continue // reverted; start the previous agent at once
		}
		// The process exited by itself.
		if code == ExitSwitch {
			if ok, err := l.acceptRequest(); err != nil {
				return err
			} else if ok {
				backoff = time.Second
				continue
			}
		}
		if trial != nil {
			l.log.Warn("the new agent exited during its trial", "bundle", trial.Bundle, "status", code, "starts", trial.Starts)
			sleep(ctx, time.Second)
			continue
		}
		if code == 2 {
			return ErrUsage
		}
		if time.Since(started) > time.Minute {
			backoff = time.Second
		}
		l.log.Warn("the agent exited; restarting", "slot", slotName, "status", code, "in", backoff)
		sleep(ctx, backoff)
		backoff = min(backoff*2, 30*time.Second)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// choose decides what to start, persisting any transition first: the trial (counting the
// start), a revert when the trial is used up, or the active slot (falling back to the previous
// slot, then to the installed binary, when a slot's files are damaged).
func (l *launcher) choose(st *State) (slotName, bin, ortLib string, trial *Trial, err error) {
	dd := l.cfg.DataDir
	if t := st.Trial; t != nil {
		switch {
		case t.Starts >= l.cfg.MaxTrialStarts:
			err = l.revert(st, ReasonCrashed, fmt.Sprintf("the new agent %s exited %d times without reporting healthy", t.Version, t.Starts))
		case t.Starts > 0 && time.Now().After(t.Deadline):
			err = l.revert(st, ReasonUnhealthy, fmt.Sprintf("the new agent %s did not report healthy by its deadline", t.Version))
		default:
			b, lib, cerr := CheckSlot(dd, t.Slot)
			if cerr != nil {
				err = l.revert(st, ReasonCorrupt, fmt.Sprintf("slot %s: %v", t.Name, cerr))
				break
			}
			if t.Starts > 0 {
				// A power cut or crash restarts the trial's clock, not its count.
				t.Deadline = time.Now().Add(l.cfg.TrialTimeout + t.Bake).UTC()
			}
			t.Starts++
			if err = l.save(*st); err != nil {
				return "", "", "", nil, err
			}
			tc := *t
			return t.Name, b, lib, &tc, nil
		}
		if err != nil {
			return "", "", "", nil, err
		}
	}
	for st.Active != nil {
		b, lib, cerr := CheckSlot(dd, *st.Active)
		if cerr == nil {
			return st.Active.Name, b, lib, nil, nil
		}
		l.log.Error("active runtime slot is damaged; falling back", "slot", st.Active.Name, "err", cerr)
		bad := st.Active
		st.Active, st.Previous = st.Previous, nil
		st.Last = &Outcome{Bundle: bad.Bundle, Version: bad.Version, Result: ResultReverted, Reason: ReasonCorrupt, Message: cerr.Error(), At: time.Now().UTC()}
		if err := l.save(*st); err != nil {
			return "", "", "", nil, err
		}
	}
	return Installed, l.cfg.Installed, "", nil, nil
}

// revert ends the trial: the previous agent runs again and reads why in Last.
func (l *launcher) revert(st *State, reason, msg string) error {
	t := st.Trial
	l.log.Error("reverting to the previous agent", "bundle", t.Bundle, "version", t.Version, "reason", reason, "why", msg)
	st.Trial = nil
	st.Last = &Outcome{Bundle: t.Bundle, Version: t.Version, Result: ResultReverted, Reason: reason, Message: msg, At: time.Now().UTC()}
	if err := l.save(*st); err != nil {
		return err
	}
	os.Remove(filepath.Join(RuntimeDir(l.cfg.DataDir), HealthyFile))
	return nil
}

// acceptRequest turns the agent's switch request into a trial.
func (l *launcher) acceptRequest() (bool, error) {
	dd := l.cfg.DataDir
	req, err := ReadRequest(dd)
	if err != nil || req == nil {
		l.log.Warn("the agent exited for a switch but left no readable request", "err", err)
		return false, nil
	}
	st, err := ReadState(dd)
	if err != nil {
		st = State{}
	}
	if _, _, err := CheckSlot(dd, req.Slot); err != nil || (req.Name != "a" && req.Name != "b") || (st.Active != nil && st.Active.Name == req.Name) {
		// Never run a slot that does not hold what was asked, nor overwrite the running one.
		l.log.Error("switch request refused", "slot", req.Name, "bundle", req.Bundle, "err", err)
		st.Last = &Outcome{Bundle: req.Bundle, Version: req.Version, Result: ResultReverted, Reason: ReasonCorrupt, Message: fmt.Sprintf("switch to slot %s refused: %v", req.Name, err), At: time.Now().UTC()}
		if err := l.save(st); err != nil {
			return false, err
		}
		os.Remove(filepath.Join(RuntimeDir(dd), RequestFile))
		return true, nil
	}
	os.Remove(filepath.Join(RuntimeDir(dd), HealthyFile))
	st.Trial = &Trial{Slot: req.Slot, Bake: max(req.Bake, 0), Deadline: time.Now().Add(l.cfg.TrialTimeout + max(req.Bake, 0)).UTC()}
	if err := l.save(st); err != nil {
		return false, err
	}
	// The request is consumed only once the trial is on disk: a power cut in between repeats
	// the same transition.
	if err := os.Remove(filepath.Join(RuntimeDir(dd), RequestFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	l.log.Info("starting the new agent on trial", "slot", req.Name, "bundle", req.Bundle, "version", req.Version, "deadline", l.cfg.TrialTimeout)
	return true, nil
}

type ending int

const (
	endExited ending = iota
	endCommitted
	endDeadline
)

// runOnce starts one agent and waits for it. During a trial it watches healthy.json (commit) and
// the deadline (stop and revert); after a commit it keeps waiting for the same process.
func (l *launcher) runOnce(ctx context.Context, slotName, bin, ortLib string, trial *Trial) (int, ending, error) {
	args := append([]string{"run"}, l.cfg.Args...)
	if ortLib != "" {
		args = append(args, "--ort-lib", ortLib) // the last --ort-lib wins over earlier ones and the environment
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), EnvSlot+"="+slotName)
	cmd.Stdout, cmd.Stderr = l.cfg.Stdout, l.cfg.Stderr
	if err := cmd.Start(); err != nil {
		if trial != nil {
			l.log.Error("cannot start the new agent", "bin", bin, "err", err)
			return -1, endExited, nil // counted as a failed start
		}
		return 0, 0, fmt.Errorf("start %s: %w", bin, err)
	}
	l.log.Info("agent started", "slot", slotName, "pid", cmd.Process.Pid, "trial", trial != nil)
	done := make(chan int, 1)
	go func() {
		err := cmd.Wait()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			code = -1
		}
		done <- code
	}()
	var tick <-chan time.Time
	if trial != nil {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		tick = t.C
	}
	committed := false
	for {
		select {
		case code := <-done:
			if committed {
				return code, endCommitted, nil
			}
			return code, endExited, nil
		case <-ctx.Done():
			l.stop(cmd, done)
			return 0, endExited, nil
		case <-tick:
			h, err := readHealthy(l.cfg.DataDir)
			if err == nil && h != nil && h.Bundle == trial.Bundle {
				if err := l.commit(trial); err != nil {
					l.stop(cmd, done)
					return 0, 0, err
				}
				committed, tick = true, nil
				continue
			}
			if time.Now().After(trial.Deadline) {
				l.log.Error("the new agent did not report healthy in time; stopping it", "bundle", trial.Bundle, "deadline", l.cfg.TrialTimeout)
				l.stop(cmd, done)
				st, err := ReadState(l.cfg.DataDir)
				if err != nil || st.Trial == nil {
					return 0, endDeadline, err
				}
				return 0, endDeadline, l.revert(&st, ReasonUnhealthy, fmt.Sprintf("the new agent %s did not connect, report and bake (%s) within %s", trial.Version, trial.Bake, l.cfg.TrialTimeout+trial.Bake))
			}
		}
	}
}

// commit makes the trial slot the active one.
func (l *launcher) commit(t *Trial) error {
	dd := l.cfg.DataDir
	st, err := ReadState(dd)
	if err != nil {
		return err
	}
	st.Previous, st.Active, st.Trial = st.Active, &t.Slot, nil
	st.Last = &Outcome{Bundle: t.Bundle, Version: t.Version, Result: ResultCommitted, At: time.Now().UTC()}
	if err := l.save(st); err != nil {
		return err
	}
	os.Remove(filepath.Join(RuntimeDir(dd), HealthyFile))
	l.log.Info("the new agent reported healthy; committed", "slot", t.Name, "bundle", t.Bundle, "version", t.Version)
	return nil
}

// stop sends SIGTERM, then SIGKILL after StopTimeout, and waits for the exit.
func (l *launcher) stop(cmd *exec.Cmd, done <-chan int) {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(l.cfg.StopTimeout):
		cmd.Process.Kill()
		<-done
	}
}
