package main

import (
	"slices"
	"testing"

	"github.com/coredns/coredns/core/dnsserver"
)

func TestIstioGlobalRunsBeforeForward(t *testing.T) {
	d := dnsserver.Directives
	ig, fwd := slices.Index(d, "istioglobal"), slices.Index(d, "forward")
	if ig < 0 || fwd < 0 || ig != fwd-1 {
		t.Errorf("istioglobal at %d, forward at %d: want istioglobal just before forward", ig, fwd)
	}
	if n := len(slices.DeleteFunc(slices.Clone(d), func(s string) bool { return s != "istioglobal" })); n != 1 {
		t.Errorf("istioglobal registered %d times", n)
	}
}

func TestInsertBefore(t *testing.T) {
	for _, tc := range []struct {
		in, want []string
	}{
		{[]string{"a", "forward", "b"}, []string{"a", "x", "forward", "b"}},
		{[]string{"forward"}, []string{"x", "forward"}},
		{[]string{"a", "b"}, []string{"a", "b", "x"}}, // no anchor: last
		{nil, []string{"x"}},
	} {
		if got := insertBefore(tc.in, "forward", "x"); !slices.Equal(got, tc.want) {
			t.Errorf("insertBefore(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
