//go:build !linux

package test

import "syscall"

// sysProcAttr: without Linux's Pdeathsig, children are only stopped by the harness's cleanup.
func sysProcAttr() *syscall.SysProcAttr { return nil }
