package stubdomain

import (
	"fmt"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
)

// diffContext is the number of unchanged lines shown around each change, as diff -u does.
const diffContext = 3

// UnifiedDiff returns a unified diff of before → after for --dry-run, or "" when they are
// equal. The headers carry name and say which side is which:
//
//	--- kube-system/coredns Corefile	current
//	+++ kube-system/coredns Corefile	proposed
//	@@ -17,3 +17,11 @@
//
// Line endings are kept as they are, and a last line without one is followed by
// `\ No newline at end of file`, as diff -u does.
func UnifiedDiff(name, before, after string) string {
	if before == after {
		return ""
	}
	a, b := diffLines(before), diffLines(after)
	// autojunk off: in a long Corefile, "}" and indentation-only lines are frequent, not junk.
	m := difflib.NewMatcherWithJunk(a, b, false, nil)
	var out strings.Builder
	fmt.Fprintf(&out, "--- %s\tcurrent\n+++ %s\tproposed\n", name, name)
	for _, group := range m.GetGroupedOpCodes(diffContext) {
		first, last := group[0], group[len(group)-1]
		fmt.Fprintf(&out, "@@ -%s +%s @@\n", unifiedRange(first.I1, last.I2), unifiedRange(first.J1, last.J2))
		for _, op := range group {
			if op.Tag == 'e' {
				writeDiffLines(&out, " ", a[op.I1:op.I2])
				continue
			}
			if op.Tag == 'r' || op.Tag == 'd' {
				writeDiffLines(&out, "-", a[op.I1:op.I2])
			}
			if op.Tag == 'r' || op.Tag == 'i' {
				writeDiffLines(&out, "+", b[op.J1:op.J2])
			}
		}
	}
	return out.String()
}

// diffLines splits s into lines that keep their line endings; the last may have none.
func diffLines(s string) []string {
	lines := strings.SplitAfter(s, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// writeDiffLines writes lines with prefix, marking a line without a line ending.
func writeDiffLines(out *strings.Builder, prefix string, lines []string) {
	for _, l := range lines {
		out.WriteString(prefix)
		out.WriteString(l)
		if !strings.HasSuffix(l, "\n") {
			out.WriteString("\n\\ No newline at end of file\n")
		}
	}
}

// unifiedRange formats a hunk range as diff -u does: "start,length", "start" for one line, and
// for an empty range the line before it.
func unifiedRange(start, stop int) string {
	begin, length := start+1, stop-start
	switch length {
	case 1:
		return fmt.Sprintf("%d", begin)
	case 0:
		begin--
	}
	return fmt.Sprintf("%d,%d", begin, length)
}
