// Package web holds the operator console: plain HTML, CSS and JavaScript with no build step,
// embedded into the control plane binary and served at GET / (controlplane/api/console.go).
package web

import "embed"

// Static is the console's files under static/.
//
//go:embed static
var Static embed.FS
