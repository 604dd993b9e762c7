package test

import "syscall"

// sysProcAttr has the kernel SIGKILL a child when the thread that started it dies, so no etcd,
// kube-apiserver or coredns outlives the test binary, even after a panic or go test's timeout.
// Go only ends threads whose goroutine exits while locked to them; TestMain keeps its own.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
