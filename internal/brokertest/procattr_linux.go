package brokertest

import "syscall"

// childProcAttr makes the kernel kill the broker if the test binary dies
// (panic, timeout, SIGKILL) before t.Cleanup could stop it, so a crashed
// test run does not leave brokers holding ports.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
