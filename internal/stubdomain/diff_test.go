package stubdomain

import (
	"strings"
	"testing"
)

func TestUnifiedDiff(t *testing.T) {
	tests := []struct {
		name, before, after, want string
	}{
		{"equal", "a\nb\n", "a\nb\n", ""},
		{"both empty", "", "", ""},
		{"append at the end", "a\nb\nc\nd\ne\n", "a\nb\nc\nd\ne\n\nX\n",
			"--- f\tcurrent\n+++ f\tproposed\n@@ -3,3 +3,5 @@\n c\n d\n e\n+\n+X\n"},
		{"change in the middle, with context", "1\n2\n3\n4\n5\n6\n7\n8\n9\n", "1\n2\n3\n4\nfive\n6\n7\n8\n9\n",
			"--- f\tcurrent\n+++ f\tproposed\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n"},
		{"two hunks", "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n", "one\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\ntwelve\n",
			"--- f\tcurrent\n+++ f\tproposed\n@@ -1,4 +1,4 @@\n-1\n+one\n 2\n 3\n 4\n@@ -9,4 +9,4 @@\n 9\n 10\n 11\n-12\n+twelve\n"},
		{"from nothing", "", "a\nb\n", "--- f\tcurrent\n+++ f\tproposed\n@@ -0,0 +1,2 @@\n+a\n+b\n"},
		{"to nothing", "a\n", "", "--- f\tcurrent\n+++ f\tproposed\n@@ -1 +0,0 @@\n-a\n"},
		{"no newline at end", "a\nb", "a\nb\n",
			"--- f\tcurrent\n+++ f\tproposed\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n"},
		{"CRLF kept", "a\r\nb\r\n", "a\r\nc\r\n", "--- f\tcurrent\n+++ f\tproposed\n@@ -1,2 +1,2 @@\n a\r\n-b\r\n+c\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := UnifiedDiff("f", tc.before, tc.after); got != tc.want {
				t.Fatalf("UnifiedDiff:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestUnifiedDiffCorefile(t *testing.T) {
	after, err := SetServerBlock(kubeadmCorefile, "global", aps(t, "10.0.0.53", "fd00::35"))
	if err != nil {
		t.Fatal(err)
	}
	name := "kube-system/coredns Corefile"
	got := UnifiedDiff(name, kubeadmCorefile, after)
	want := "--- kube-system/coredns Corefile\tcurrent\n" +
		"+++ kube-system/coredns Corefile\tproposed\n" +
		"@@ -18,3 +18,11 @@\n" +
		"     reload\n" +
		"     loadbalance\n" +
		" }\n" +
		"+\n" +
		"+# BEGIN coredns-istio stubdomain global (managed by `coredns-istio stubdomain`; do not edit)\n" +
		"+global:53 {\n" +
		"+    errors\n" +
		"+    cache 30\n" +
		"+    forward . 10.0.0.53 fd00::35\n" +
		"+}\n" +
		"+# END coredns-istio stubdomain global\n"
	if got != want {
		t.Fatalf("UnifiedDiff:\n%s\nwant:\n%s", got, want)
	}
	if strings.Count(got, "\n@@") != 1 {
		t.Fatalf("want one hunk:\n%s", got)
	}
	// Changing the servers of the block in place shows just that line.
	changed, err := SetServerBlock(after, "global", aps(t, "10.0.0.60"))
	if err != nil {
		t.Fatal(err)
	}
	d := UnifiedDiff(name, after, changed)
	if !strings.Contains(d, "\n-    forward . 10.0.0.53 fd00::35\n+    forward . 10.0.0.60\n") || strings.Count(d, "\n-") != 1 {
		t.Fatalf("in-place change diff:\n%s", d)
	}
}
