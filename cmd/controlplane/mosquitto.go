package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/edgefleet/edgefleet/controlplane"
	"github.com/edgefleet/edgefleet/internal/cli"
)

// mosquittoACLCmd writes the Mosquitto files from a stopped control plane's store (a running
// one keeps them current itself with --mosquitto-dir).
func mosquittoACLCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mosquitto-acl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cli.Usage(fs, "controlplane mosquitto-acl --data DIR --out DIR [--prefix edgefleet] [--controlplane-user NAME]")
	data := fs.String("data", "./var/controlplane", "the control plane's data folder")
	out := fs.String("out", "", "folder for edgefleet.passwd, edgefleet.acl and controlplane.password")
	prefix := fs.String("prefix", "edgefleet", "MQTT topic prefix")
	user := fs.String("controlplane-user", "edgefleet-controlplane", "the control plane's username at Mosquitto (its --broker-username)")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("--out is required")
	}
	n, err := controlplane.WriteMosquittoFiles(ctx, *data, *out, *prefix, *user)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s and %s (%d devices); the control plane's password is in %s\n",
		filepath.Join(*out, "edgefleet.passwd"), filepath.Join(*out, "edgefleet.acl"), n, filepath.Join(*out, "controlplane.password"))
	return nil
}
