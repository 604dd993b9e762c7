package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkServerQPS measures the real server's queries per second under dnsperf, in the shape
// deploy/ runs it: the Deployment's CPU limit of 1 sets GOMAXPROCS=1 (Go reads the cgroup
// quota); here the server runs on one core with GOMAXPROCS=1 and dnsperf on the other. It
// serves 10k ServiceEntries from the real API server and compares, in the same run:
//
//   - whoami, the server loop's own bound;
//   - istioglobal alone;
//   - the shipped Corefile (corefile/Corefile), and variants of its logging and multisocket.
//
// Each runs for qpsSeconds per query mix (A only; A and AAAA, as glibc asks). It reports qps
// per configuration and its ratio to whoami. Run it alone (make bench-server):
//
//	go test -run '^$' -bench ServerQPS -benchtime 1x -timeout 30m ./test/
func BenchmarkServerQPS(b *testing.B) {
	if _, err := exec.LookPath("dnsperf"); err != nil {
		b.Fatal("dnsperf is not installed (test/tools/install-deps.sh)")
	}
	const n = 10_000
	createServiceEntries(b, []string{"qps"}, "q", n)
	shipped, err := os.ReadFile("../corefile/Corefile")
	if err != nil {
		b.Fatal(err)
	}
	logBlock := "    log . {\n        class error\n    }\n"
	if !strings.Contains(string(shipped), logBlock) {
		b.Fatalf("corefile/Corefile has no %q block to vary", logBlock)
	}
	ship := func(replace ...string) string {
		return deployCorefile(b, strings.NewReplacer(replace...).Replace(string(shipped)), kubeconfig)
	}
	oneCPU := []string{"taskset", "-c", "1", "env", "GOMAXPROCS=1"}
	twoCPUs := []string{"env", "GOMAXPROCS=2"}
	configs := []struct {
		name     string
		corefile string
		prefix   []string
	}{
		{"whoami", "global:{{.Port}} {\n    bind 127.0.0.1\n    ready 127.0.0.1:{{.ReadyPort}}\n    whoami\n}\n", oneCPU},
		{"istioglobal", "global:{{.Port}} {\n    bind 127.0.0.1\n    ready 127.0.0.1:{{.ReadyPort}}\n" +
			"    istioglobal {\n        kubeconfig {{.Kubeconfig}}\n        namespaces qps\n    }\n}\n", oneCPU},
		{"shipped", ship(), oneCPU},
		{"shipped, whoami for istioglobal", shippedWhoami(b, ship()), oneCPU},
		{"shipped, no log", ship(logBlock, ""), oneCPU},
		{"shipped, log denials too", ship("class error", "class denial error"), oneCPU},
		{"shipped, log every query", ship(logBlock, "    log\n"), oneCPU},
		{"shipped, multisocket", ship("    errors\n", "    errors\n    multisocket\n"), oneCPU},
		{"shipped, 2 CPUs", ship(), twoCPUs},
		{"shipped, 2 CPUs, multisocket", ship("    errors\n", "    errors\n    multisocket\n"), twoCPUs},
	}
	mixes := map[string]string{"A": dnsperfInput(b, n, "A"), "A+AAAA": dnsperfInput(b, n, "A", "AAAA")}
	results := map[string]float64{}
	for range b.N {
		for _, cfg := range configs {
			c := startCoreDNSUnder(b, cfg.corefile, cfg.prefix...)
			c.waitReady(b, 60*time.Second)
			if !strings.Contains(cfg.name, "whoami") {
				eventually(b, 30*time.Second, func() error {
					if got := aValues(b, c, bulkName("q", n-1)); got != bulkAddr(n-1) {
						return fmt.Errorf("%s: %s before the bulk load is served", cfg.name, got)
					}
					return nil
				})
			}
			for _, mix := range []string{"A", "A+AAAA"} {
				if strings.Contains(cfg.name, "2 CPUs") && mix != "A" {
					continue
				}
				qps := dnsperf(b, c, mixes[mix])
				results[cfg.name+" / "+mix] = qps
				b.Logf("%-32s %-7s %8.0f qps", cfg.name, mix, qps)
			}
			c.stop()
		}
	}
	for key, qps := range results {
		mix := key[strings.LastIndex(key, " / ")+3:]
		base := results["whoami / "+mix]
		metric := strings.NewReplacer(" / ", "_", " ", "_", ",", "").Replace(key)
		b.ReportMetric(qps, metric+"_qps")
		if base > 0 && !strings.Contains(key, "2 CPUs") {
			b.ReportMetric(qps/base, metric+"_x_whoami")
		}
	}
}

// shippedWhoami is the shipped Corefile with whoami in istioglobal's place: the cost of the
// plugin chain around it, without the plugin.
func shippedWhoami(b *testing.B, corefile string) string {
	i := strings.Index(corefile, "    istioglobal")
	j := strings.Index(corefile[i:], "\n    }\n")
	if i < 0 || j < 0 {
		b.Fatalf("no istioglobal block in:\n%s", corefile)
	}
	return corefile[:i] + "    whoami\n" + corefile[i+j+len("\n    }\n"):]
}

// dnsperfInput writes the queries for the n bulk names, each asked as every qtype in turn.
func dnsperfInput(b *testing.B, n int, qtypes ...string) string {
	var sb strings.Builder
	for i := range n {
		for _, qt := range qtypes {
			fmt.Fprintf(&sb, "%s %s\n", bulkName("q", i), qt)
		}
	}
	path := filepath.Join(b.TempDir(), "queries")
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}

var qpsLine = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)

const qpsSeconds = 8

// dnsperf runs dnsperf on core 0 against c for qpsSeconds and returns its queries per second.
func dnsperf(b *testing.B, c *coreDNS, input string) float64 {
	b.Helper()
	out, err := exec.Command("taskset", "-c", "0", "dnsperf", "-s", "127.0.0.1", "-p", strconv.Itoa(c.Port),
		"-d", input, "-l", strconv.Itoa(qpsSeconds), "-c", "32", "-q", "256", "-T", "1").CombinedOutput()
	m := qpsLine.FindSubmatch(out)
	if err != nil || m == nil {
		b.Fatalf("dnsperf: %v\n%s", err, out)
	}
	qps, _ := strconv.ParseFloat(string(m[1]), 64)
	return qps
}
