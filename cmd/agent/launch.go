package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/edgefleet/edgefleet/agent/launcher"
	"github.com/edgefleet/edgefleet/internal/cli"
)

const launchUsage = `usage: agent launch [--trial-timeout D] [--max-trial-starts N] [every 'agent run' flag]

Runs 'agent run' with the same flags from the active runtime slot (DATA/runtime/a or b), or
from this binary when no runtime bundle is installed, and restarts it when it exits. After an
agent installed a runtime bundle, the new agent runs on trial: it must connect and report
within --trial-timeout (default 2m, or EDGEFLEET_TRIAL_TIMEOUT) and may start at most
--max-trial-starts times (default 3), or the previous agent runs again and reports why.
The data folder comes from --data or EDGEFLEET_DATA.
`

// launch splits its own flags from the agent's (which pass through unchanged) and runs the
// launcher. The data folder is read from the agent's --data (or EDGEFLEET_DATA): both processes
// must agree on it, so it is given once.
func launch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, help, err := parseLaunch(args, os.LookupEnv)
	if err != nil {
		return err
	}
	if help {
		fmt.Fprint(stdout, launchUsage)
		return nil
	}
	cfg.InstalledVersion, cfg.Stdout, cfg.Stderr = cli.Version, stdout, stderr
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	return launcher.Run(ctx, cfg)
}

// parseLaunch takes the launcher's flags out of args; every other flag, with its value, is
// passed on to `agent run`.
func parseLaunch(args []string, lookupEnv func(string) (string, bool)) (cfg launcher.Config, help bool, err error) {
	cfg.DataDir, _ = lookupEnv(cli.EnvName("data"))
	if v, ok := lookupEnv(cli.EnvName("trial-timeout")); ok {
		if cfg.TrialTimeout, err = time.ParseDuration(v); err != nil {
			return cfg, false, fmt.Errorf("EDGEFLEET_TRIAL_TIMEOUT %q: %w", v, err)
		}
	}
	var rest []string
	for i := 0; i < len(args); i++ {
		name, val, hasVal := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if args[i] == "--" {
			rest = append(rest, args[i+1:]...) // what follows is for `agent run` alone
			break
		}
		if !strings.HasPrefix(args[i], "-") {
			rest = append(rest, args[i:]...)
			break
		}
		take := func() (string, error) {
			if hasVal {
				return val, nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("flag --%s needs a value", name)
			}
			i++
			return args[i], nil
		}
		switch name {
		case "h", "help":
			return cfg, true, nil
		case "trial-timeout":
			v, err := take()
			if err != nil {
				return cfg, false, err
			}
			if cfg.TrialTimeout, err = time.ParseDuration(v); err != nil {
				return cfg, false, fmt.Errorf("--trial-timeout %q: %w", v, err)
			}
		case "max-trial-starts":
			v, err := take()
			if err != nil {
				return cfg, false, err
			}
			if _, err := fmt.Sscan(v, &cfg.MaxTrialStarts); err != nil {
				return cfg, false, fmt.Errorf("--max-trial-starts %q: %w", v, err)
			}
		case "data":
			v, err := take()
			if err != nil {
				return cfg, false, err
			}
			cfg.DataDir = v
			rest = append(rest, "--data", v)
		case "print-config":
			rest = append(rest, args[i]) // the one boolean flag of run
		default:
			// Every other run flag takes a value; keep the pair together so a value is never
			// mistaken for the end of the flags.
			rest = append(rest, args[i])
			if !hasVal && i+1 < len(args) {
				i++
				rest = append(rest, args[i])
			}
		}
	}
	cfg.Args = rest
	return cfg, false, nil
}
