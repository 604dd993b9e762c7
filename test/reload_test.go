package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// reloadUnderLoad reloads c (SIGUSR1: CoreDNS builds a new instance from the Corefile, then
// stops the old one) times times while about 1,000 queries a second for the n names of prefix
// go on, and fails on any SERVFAIL, wrong answer or lost query.
func reloadUnderLoad(t *testing.T, c *coreDNS, prefix string, n, times int) {
	t.Helper()
	stop := queryLoad(t, c.Addr, prefix, n, 1000)
	before := strings.Count(c.output(), "Reloading complete")
	for i := range times {
		time.Sleep(time.Second)
		if err := c.signal(syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		eventually(t, 20*time.Second, func() error {
			if got := strings.Count(c.output(), "Reloading complete") - before; got <= i {
				return fmt.Errorf("reload %d has not completed", i+1)
			}
			return nil
		})
	}
	time.Sleep(time.Second)
	res := stop()
	t.Logf("%d reloads: %s", times, res)
	if res.servfail.Load()+res.wrong.Load()+res.failed.Load() > 0 || res.sent.Load() < 1000 {
		if w := res.firstWrong.Load(); w != nil {
			t.Logf("first wrong answer:\n%s", *w)
		}
		t.Errorf("through %d reloads: %s; want every query answered right", times, res)
	}
}

func TestReloadFilesWithoutGap(t *testing.T) {
	const n = 1000
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "entries.yaml"), []byte(bulkEntriesYAML("files", "rf", n)), 0o644); err != nil {
		t.Fatal(err)
	}
	c := startCoreDNS(t, filesCorefile(dir))
	c.waitReady(t, 20*time.Second)
	reloadUnderLoad(t, c, "rf", n, 4)
}

func TestReloadKubernetesWithoutGap(t *testing.T) {
	const n = 1000
	createServiceEntries(t, []string{"reloadgap"}, "rk", n)
	c := startIstioGlobal(t, "reloadgap")
	answersWithin(t, c, 10*time.Second, bulkName("rk", n-1), bulkAddr(n-1))
	reloadUnderLoad(t, c, "rk", n, 4)

	// A reload while the API server cannot answer: the new instance cannot sync, and serves the
	// old one's table until it can.
	t.Run("API server paused", func(t *testing.T) {
		resume := pauseAPIServer(t)
		reloadUnderLoad(t, c, "rk", n, 2)
		resume()
		applyServiceEntry(t, serviceEntryV1("reloadgap", "late", []string{"late.reloadgap.global"}, "240.0.7.1"))
		answersWithin(t, c, 15*time.Second, "late.reloadgap.global", "240.0.7.1")
	})
}
