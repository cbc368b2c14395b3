//go:build !linux

package brokertest

import "syscall"

// childProcAttr: outside Linux there is no parent-death signal; t.Cleanup
// is the only thing that stops the broker.
func childProcAttr() *syscall.SysProcAttr { return nil }
