// Package test holds the end-to-end tests: the real coredns-istio binary against a real etcd and
// kube-apiserver on loopback, queried with miekg/dns and dig.
//
// TestMain needs the directory holding the pinned kube-apiserver and etcd in
// COREDNS_ISTIO_CONTROLPLANE (test/tools/controlplane.sh prints it) and dig on PATH
// (test/tools/install-deps.sh). Without them the tests are skipped, unless CI=true, where that
// is an error.
package test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Handles on the shared environment, set by TestMain before any test runs.
var (
	kubeconfig    string       // admin (system:masters) kubeconfig file, for external processes
	restConfig    *rest.Config // admin identity
	kubeClient    kubernetes.Interface
	istioClient   istioclient.Interface
	corednsBinary string // the coredns-istio binary built from this checkout
	cluster       *controlPlane
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	binDir, err := controlPlaneDir()
	if err == nil {
		if _, err = exec.LookPath("dig"); err != nil {
			err = fmt.Errorf("%w (see test/tools/install-deps.sh)", err)
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			fmt.Fprintf(os.Stderr, "end-to-end tests cannot run (CI=true): %v\n", err)
			return 1
		}
		fmt.Printf("skipping end-to-end tests: %v\n", err)
		return 0
	}

	// The child processes get SIGKILL when the thread that started them exits (Pdeathsig), so
	// keep that thread alive for as long as TestMain runs; a crash still takes them down.
	runtime.LockOSThread()

	removeStaleDirs()
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", tempPrefix, os.Getpid()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)

	ctx, cancel := context.WithCancel(context.Background())
	var buildErr error
	built := make(chan struct{})
	defer func() { cancel(); <-built }() // Never remove dir under a running go build.
	corednsBinary = filepath.Join(dir, "coredns-istio")
	go func() {
		defer close(built)
		start := time.Now()
		buildErr = buildCoreDNS(ctx, corednsBinary)
		logf("built coredns-istio in %v", time.Since(start).Round(time.Millisecond))
	}()

	start := time.Now()
	cluster, err = startControlPlane(ctx, binDir, dir)
	defer cluster.stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting the control plane: %v\n%s", err, cluster.logTails())
		return 1
	}
	logf("control plane ready in %v", time.Since(start).Round(time.Millisecond))

	restConfig = cluster.admin
	kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, restConfig); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	kubeClient = kubernetes.NewForConfigOrDie(restConfig)
	istioClient = istioclient.NewForConfigOrDie(restConfig)

	start = time.Now()
	if err := installIstioCRDs(ctx, restConfig); err != nil {
		fmt.Fprintf(os.Stderr, "installing the Istio CRDs: %v\n", err)
		return 1
	}
	logf("Istio CRDs established in %v", time.Since(start).Round(time.Millisecond))

	<-built
	if buildErr != nil {
		fmt.Fprintf(os.Stderr, "building coredns-istio: %v\n", buildErr)
		return 1
	}
	return m.Run()
}

const tempPrefix = "coredns-istio-e2e-"

// removeStaleDirs removes the temporary directories (the binary alone is 80 MB) of earlier runs whose
// test binary died without cleaning up: a panic or go test's timeout skips TestMain's defers.
func removeStaleDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, dir := range dirs {
		pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(dir), tempPrefix), "-")
		if n, err := strconv.Atoi(pid); err == nil && syscall.Kill(n, 0) == syscall.ESRCH {
			os.RemoveAll(dir)
		}
	}
}

// controlPlaneDir returns the directory from COREDNS_ISTIO_CONTROLPLANE after checking that it
// holds the kube-apiserver and etcd executables.
func controlPlaneDir() (string, error) {
	dir := os.Getenv("COREDNS_ISTIO_CONTROLPLANE")
	if dir == "" {
		return "", errors.New("COREDNS_ISTIO_CONTROLPLANE is not set (see test/tools/controlplane.sh)")
	}
	for _, name := range []string{"kube-apiserver", "etcd"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return "", fmt.Errorf("COREDNS_ISTIO_CONTROLPLANE: %w", err)
		}
		if fi.Mode()&0o111 == 0 || !fi.Mode().IsRegular() {
			return "", fmt.Errorf("COREDNS_ISTIO_CONTROLPLANE: %s is not an executable file", filepath.Join(dir, name))
		}
	}
	return dir, nil
}

// buildCoreDNS builds ./cmd/coredns-istio of this checkout (go test runs in test/) into out.
func buildCoreDNS(ctx context.Context, out string) error {
	// Without debug info the link, most of a cached build, takes half the time.
	cmd := exec.CommandContext(ctx, "go", "build", "-ldflags=-s -w", "-o", out, "./cmd/coredns-istio")
	cmd.Dir = ".."
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v\n%s", err, b)
	}
	return nil
}

// istioCRDFile is the CRD bundle shipped in the istio.io/api module this repository requires.
func istioCRDFile() (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/api")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go list -m istio.io/api: %w", err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", errors.New("istio.io/api is not in the module cache; run go mod download")
	}
	file := filepath.Join(dir, "kubernetes", "customresourcedefinitions.gen.yaml")
	if _, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("istio.io/api has no CRD bundle at %s", file)
	}
	return file, nil
}

// logf prints harness progress under go test -v.
func logf(format string, args ...any) {
	if testing.Verbose() {
		fmt.Printf("e2e: "+format+"\n", args...)
	}
}
