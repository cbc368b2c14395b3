package pgtest

import "syscall"

// procAttr makes the kernel kill the postmaster if the test binary dies (panic, timeout, SIGKILL)
// before t.Cleanup could stop it; its backends notice their postmaster is gone and exit too.
func procAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: cred}
}
