package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/coredns-istio/coredns-istio/internal/kube"
	"github.com/coredns-istio/coredns-istio/internal/stubdomain"
)

const stubdomainUsage = `Usage: coredns-istio stubdomain COMMAND [flags]

Makes every hop of a pod's query path (NodeLocal DNSCache, then the cluster DNS: kube-dns,
CoreDNS, or the coredns-custom ConfigMap that CoreDNS imports) forward the zones (default:
global) to coredns-istio, keeping everything else in their ConfigMaps as it is.

Commands:
  apply    forward the zones to the servers on every hop; writes nothing where that is so
  remove   take out exactly what apply adds
  status   show, per hop and zone, what it forwards the zone to and whether that is the
           desired servers, naming a leak; exit status 0 when all match, 1 when not, 2 on error
  watch    apply, then again whenever the Service's cluster IPs change or someone edits the
           ConfigMaps of every hop, detected again every 30 s; runs until SIGTERM/SIGINT,
           with leader election when replicated

Targets (--target names the cluster DNS, in --dns-namespace):
  kube-dns        ConfigMap kube-dns, key stubDomains: {"global": ["IP", ...]} (created if missing)
  coredns         ConfigMap coredns, key Corefile: a marked "global:53 { forward . IP... }" block
                  (never another block: a block someone else wrote for the zone is refused)
  coredns-custom  the ConfigMap CoreDNS imports DIR/*.server from (AKS, k3s), key
                  coredns-istio.server
  node-local-dns  NodeLocal DNSCache's own Corefile (kubespray's nodelocaldns): a marked block
                  bound where the cache listens
  auto            coredns-custom when the Corefile imports DIR/*.server and the CoreDNS
                  Deployment mounts a ConfigMap there (a Corefile importing custom/*.server
                  when the Deployment cannot be read); coredns if ConfigMap coredns has a
                  Corefile or Deployment coredns exists, refused when a controller re-applies
                  that ConfigMap (addon manager, k3s) and it imports nothing; else kube-dns if
                  its Deployment or ConfigMap exists
  In front of any of them NodeLocal DNSCache (DaemonSet node-local-dns or nodelocaldns) is a
  hop of its own: kube-dns's stubDomains where it mounts that ConfigMap, else node-local-dns.

Servers: every cluster IP of --service (both families of a dual-stack Service) on its UDP port
named dns (else its UDP port 53), or the addresses given with --ip.

Exit status: 0 done; 1 failed (status: does not match); 2 bad usage (status: any error).

Run 'coredns-istio stubdomain COMMAND -h' for the flags of a command.
`

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// newKubeClient builds the API client from the flags; tests replace it with a fake.
var newKubeClient = func(kubeconfig, kubeContext string) (kubernetes.Interface, error) {
	cfg, err := restConfig(kubeconfig, kubeContext)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// restConfig loads the client configuration: the in-cluster one unless a kubeconfig or context
// is given or there is none, then $KUBECONFIG, then ~/.kube/config (clientcmd's loading rules).
func restConfig(kubeconfig, kubeContext string) (*rest.Config, error) {
	cfg, err := kube.Config(kubeconfig, kubeContext, kube.InClusterThenLocal, "coredns-istio-stubdomain")
	if err != nil {
		return nil, fmt.Errorf("loading the kubeconfig (not in a cluster; --kubeconfig, $KUBECONFIG or ~/.kube/config): %w", err)
	}
	// client-go's default of 5 requests per second (burst 10) would, after a few conflicts,
	// sleep between a Get and its Update: exactly the window in which others write.
	cfg.QPS, cfg.Burst = 50, 100
	return cfg, nil
}

// stubdomainOptions are the parsed flags of one command.
type stubdomainOptions struct {
	command      string
	kubeconfig   string
	kubeContext  string
	target       stubdomain.Target
	service      string // namespace/name
	servers      []netip.AddrPort
	zones        []string
	dnsNamespace string
	dryRun       bool

	leaderElect  bool
	lease        kube.Lease
	redetect     time.Duration // how often watch detects the query path again
	healthListen string        // host:port for /healthz; empty: none
}

// stubdomainMain runs `coredns-istio stubdomain ARGS...` and returns the exit status.
func stubdomainMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, stubdomainUsage)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, stubdomainUsage)
		return exitOK
	case "apply", "remove", "status", "watch":
	default:
		fmt.Fprintf(stderr, "coredns-istio stubdomain: unknown command %q\n\n%s", args[0], stubdomainUsage)
		return exitUsage
	}
	opts, err := parseStubdomainFlags(args[0], args[1:], stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "coredns-istio stubdomain %s: %v\nRun 'coredns-istio stubdomain %s -h' for usage.\n", args[0], err, args[0])
		return exitUsage
	}
	errStatus := exitFail
	if opts.command == "status" {
		errStatus = exitUsage
	}
	code, err := runStubdomain(opts, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "coredns-istio stubdomain %s: %v\n", opts.command, err)
		return errStatus
	}
	return code
}

// parseStubdomainFlags parses the flags of command; errors are usage errors.
func parseStubdomainFlags(command string, args []string, stdout, stderr io.Writer) (*stubdomainOptions, error) {
	opts := &stubdomainOptions{command: command}
	fs := flag.NewFlagSet("coredns-istio stubdomain "+command, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // Errors are reported once, by the caller.
	fs.StringVar(&opts.kubeconfig, "kubeconfig", "", "kubeconfig `PATH`; default: the in-cluster config, then $KUBECONFIG, then ~/.kube/config")
	fs.StringVar(&opts.kubeContext, "context", "", "kubeconfig `CONTEXT` to use; default: its current context")
	target := fs.String("target", string(stubdomain.Auto), "`TARGET`: the cluster DNS: auto, kube-dns, coredns, coredns-custom or node-local-dns (see coredns-istio stubdomain -h)")
	fs.StringVar(&opts.dnsNamespace, "dns-namespace", "kube-system", "`NAMESPACE` of the cluster DNS and its ConfigMaps")
	zones := fs.String("zones", "global", "comma-separated `ZONES` to forward")
	var ips string
	ignored := ""
	if command == "remove" {
		ignored = " (remove ignores it)"
	}
	fs.StringVar(&opts.service, "service", stubdomain.DefaultDNSService, "coredns-istio's Service `NAMESPACE/NAME`: the servers are all its cluster IPs"+ignored)
	fs.StringVar(&ips, "ip", "", "the servers, instead of a Service: `IP[:PORT][,IP[:PORT]...]` ([IPv6]:PORT)"+ignored)
	if command == "apply" || command == "remove" {
		fs.BoolVar(&opts.dryRun, "dry-run", false, "print a unified diff of the change and write nothing")
	}
	if command == "watch" {
		fs.BoolVar(&opts.leaderElect, "leader-elect", true, "hold a Lease while writing, so that of several replicas only one writes")
		fs.StringVar(&opts.lease.Namespace, "leader-elect-namespace", "", "`NAMESPACE` of the Lease; default: the --service namespace")
		fs.StringVar(&opts.lease.Name, "leader-elect-name", "coredns-istio-stubdomain", "`NAME` of the Lease")
		fs.DurationVar(&opts.lease.LeaseDuration, "leader-elect-lease-duration", 15*time.Second, "`DURATION` standbys wait after the last renewal before taking over")
		fs.DurationVar(&opts.lease.RenewDeadline, "leader-elect-renew-deadline", 10*time.Second, "`DURATION` the leader retries renewing before it gives up (and exits 1)")
		fs.DurationVar(&opts.lease.RetryPeriod, "leader-elect-retry-period", 2*time.Second, "`DURATION` between tries to acquire, or to renew")
		fs.StringVar(&opts.healthListen, "health-listen", "", "serve /healthz on `HOST:PORT`, for a liveness probe")
		fs.DurationVar(&opts.redetect, "redetect-interval", 30*time.Second, "`DURATION` between detections of the query path (NodeLocal DNSCache installed, CoreDNS replacing kube-dns)")
	}
	fs.Usage = func() {} // The caller reports errors in one line; -h prints usage below.
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "Usage: coredns-istio stubdomain %s [flags]\n\n%s\nFlags:\n", command, commandHelp[command])
			fs.SetOutput(stdout)
			fs.PrintDefaults()
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags only)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var err error
	if opts.target, err = stubdomain.ParseTarget(*target); err != nil {
		return nil, fmt.Errorf("--target: %w", err)
	}
	if opts.zones, err = stubdomain.ParseZones(*zones); err != nil {
		return nil, fmt.Errorf("--zones: %w", err)
	}
	if opts.dnsNamespace == "" {
		return nil, errors.New("--dns-namespace: empty")
	}
	if set["ip"] && set["service"] {
		return nil, errors.New("--ip and --service exclude each other")
	}
	if set["ip"] {
		if opts.servers, err = stubdomain.ParseServers(ips); err != nil {
			return nil, fmt.Errorf("--ip: %w", err)
		}
	}
	ns, name, ok := strings.Cut(opts.service, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("--service %q: want NAMESPACE/NAME", opts.service)
	}
	if command == "watch" && opts.lease.Namespace == "" {
		opts.lease.Namespace = ns
	}
	if command == "watch" {
		if opts.lease.Name == "" {
			return nil, errors.New("--leader-elect-name: empty")
		}
		l := opts.lease
		if l.LeaseDuration <= l.RenewDeadline || l.RenewDeadline <= l.RetryPeriod || l.RetryPeriod <= 0 {
			return nil, errors.New("leader election wants lease duration > renew deadline > retry period > 0")
		}
	}
	if command == "watch" && opts.redetect <= 0 {
		return nil, errors.New("--redetect-interval must be positive")
	}
	return opts, nil
}

var commandHelp = map[string]string{
	"apply":  "Forwards the zones to the servers in the cluster DNS's ConfigMap (get, modify, update\nwith its resourceVersion, retried on conflict); writes nothing when that is already so.\n",
	"remove": "Takes out exactly what apply adds: the zones' stubDomains entries, our Corefile blocks,\nour coredns-custom key (and a ConfigMap that apply created, once empty).\n",
	"status": "Shows, per hop (NodeLocal DNSCache, the cluster DNS) and zone, what it forwards the zone\nto and whether that is the desired servers. Exit status 0 when all match, 1 when not, 2 on error.\n",
	"watch":  "Applies, then again whenever the Service's cluster IPs change or someone edits the\nConfigMap (informers; bursts are debounced). Stops on SIGTERM or SIGINT.\n",
}

// runStubdomain connects and runs opts.command. It returns the exit status, or an error that
// the caller reports.
func runStubdomain(opts *stubdomainOptions, stdout, stderr io.Writer) (int, error) {
	client, err := newKubeClient(opts.kubeconfig, opts.kubeContext)
	if err != nil {
		return 0, err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if opts.command == "watch" {
		return runWatch(ctx, client, opts, stdout, stderr)
	}

	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	hops, err := detectPath(ctx, client, opts, stdout)
	if err != nil {
		return 0, err
	}
	var servers []netip.AddrPort
	if opts.command != "remove" {
		if servers, err = desiredServers(ctx, client, opts, stdout); err != nil {
			return 0, err
		}
	}

	switch opts.command {
	case "apply", "remove":
		for _, h := range hops {
			p := patcherFor(client, opts, h)
			var res stubdomain.Result
			if opts.command == "apply" {
				res, err = p.Apply(ctx, opts.zones, servers)
			} else {
				res, err = p.Remove(ctx, opts.zones)
			}
			for _, w := range res.Warnings {
				fmt.Fprintf(stderr, "warning: %s\n", w)
			}
			if err != nil {
				return 0, fmt.Errorf("%s: %w", h.Role, err)
			}
			reportResult(stdout, opts, res, servers)
		}
		if opts.command == "apply" && !opts.dryRun {
			for _, h := range hops {
				fmt.Fprintf(stdout, "%s: takes effect %s\n", h.Role, takesEffect(h))
			}
		}
		return exitOK, nil

	case "status":
		match := true
		for _, h := range hops {
			p := patcherFor(client, opts, h)
			rep, err := p.Status(ctx, opts.zones, servers)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", h.Role, err)
			}
			for _, w := range rep.Warnings {
				fmt.Fprintf(stderr, "warning: %s\n", w)
			}
			where := fmt.Sprintf("ConfigMap %s, key %s", rep.ConfigMap, h.Target.Key())
			for _, z := range rep.Zones {
				want := strings.Join(z.Want, ",")
				switch {
				case z.Match:
					fmt.Fprintf(stdout, "%s: %s: forwards to %s (%s): matches\n", h.Role, z.Zone, strings.Join(z.Configured, ","), where)
				case z.Configured == nil && z.Note != "":
					fmt.Fprintf(stdout, "%s: %s: not configured by coredns-istio: %s (%s); want %s\n", h.Role, z.Zone, z.Note, where, want)
				case z.Configured == nil:
					fmt.Fprintf(stdout, "%s: %s: not configured (%s); want %s: %s\n", h.Role, z.Zone, where, want, leak(h))
				default:
					fmt.Fprintf(stdout, "%s: %s: forwards to %s (%s); want %s: differs\n", h.Role, z.Zone, strings.Join(z.Configured, ","), where, want)
				}
			}
			match = match && rep.Match()
		}
		if !match {
			return exitFail, nil
		}
		return exitOK, nil
	}
	return 0, fmt.Errorf("unknown command %q", opts.command)
}

// detectPath resolves --target (detecting the cluster DNS for auto) and the hops in front of
// it, and says which they are and why.
func detectPath(ctx context.Context, client kubernetes.Interface, opts *stubdomainOptions, stdout io.Writer) ([]stubdomain.Hop, error) {
	hops, err := stubdomain.DetectPath(ctx, client, opts.dnsNamespace, opts.target)
	if err != nil {
		return nil, err
	}
	for _, h := range hops {
		fmt.Fprintf(stdout, "%s: target: %s (%s); ConfigMap %s/%s\n", h.Role, h.Target, h.Why, opts.dnsNamespace, h.ConfigMap)
	}
	return hops, nil
}

func patcherFor(client kubernetes.Interface, opts *stubdomainOptions, h stubdomain.Hop) *stubdomain.Patcher {
	return &stubdomain.Patcher{Client: client, Namespace: opts.dnsNamespace, Target: h.Target, ConfigMap: h.ConfigMap, DryRun: opts.dryRun}
}

// leak says where a hop sends the zone when it does not forward it to us.
func leak(h stubdomain.Hop) string {
	if strings.HasPrefix(h.Role, "node-local cache") {
		return "the cache sends it to the node's upstream resolvers, outside the cluster (a leak: global is a public TLD)"
	}
	return "the cluster DNS sends it to its upstream resolvers (a leak: global is a public TLD)"
}

// takesEffect says how long an edit of a hop's ConfigMap takes to be served.
func takesEffect(h stubdomain.Hop) string {
	const volume = "once the kubelet has synced the ConfigMap volume (up to about a minute)"
	switch {
	case strings.HasPrefix(h.Role, "node-local cache"):
		return volume + ", node-cache has reread it (every 10 s) and its reload plugin has loaded it (30 s ± 7.5 s)"
	case h.Target == stubdomain.KubeDNS:
		return volume + " and kube-dns's dnsmasq-nanny has restarted dnsmasq"
	}
	return volume + " and CoreDNS's reload plugin has loaded it (30 s ± 7.5 s)"
}

// desiredServers returns --ip, or the cluster IPs of --service.
func desiredServers(ctx context.Context, client kubernetes.Interface, opts *stubdomainOptions, stdout io.Writer) ([]netip.AddrPort, error) {
	if opts.servers != nil {
		fmt.Fprintf(stdout, "servers: %s (--ip)\n", stubdomain.FormatServers(opts.servers))
		return opts.servers, nil
	}
	ns, name, _ := strings.Cut(opts.service, "/")
	svc, err := client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading Service %s (coredns-istio's; see --service, or give --ip): %w", opts.service, err)
	}
	servers, err := stubdomain.ServiceServers(svc)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stdout, "servers: %s (Service %s)\n", stubdomain.FormatServers(servers), opts.service)
	return servers, nil
}

func reportResult(stdout io.Writer, opts *stubdomainOptions, res stubdomain.Result, servers []netip.AddrPort) {
	what := strings.Join(opts.zones, ",")
	if opts.command == "apply" {
		what += " → " + stubdomain.FormatServers(servers)
	} else {
		what = "without " + what
	}
	switch {
	case res.Action == stubdomain.Unchanged:
		fmt.Fprintf(stdout, "ConfigMap %s: unchanged (%s already)\n", res.ConfigMap, what)
	case opts.dryRun:
		fmt.Fprint(stdout, res.Diff)
		fmt.Fprintf(stdout, "ConfigMap %s: would be %s (%s); dry run, nothing written\n", res.ConfigMap, res.Action, what)
	default:
		retried := ""
		if res.Attempts > 1 {
			retried = fmt.Sprintf(", after %d conflicts", res.Attempts-1)
		}
		fmt.Fprintf(stdout, "ConfigMap %s: %s (%s%s)\n", res.ConfigMap, res.Action, what, retried)
	}
}

// runWatch runs the watcher, under leader election unless disabled, until ctx ends.
func runWatch(ctx context.Context, client kubernetes.Interface, opts *stubdomainOptions, stdout, stderr io.Writer) (int, error) {
	logger := log.New(stderr, "", log.LstdFlags)
	logf := func(format string, args ...any) { logger.Printf(format, args...) }
	if opts.healthListen != "" {
		stop, err := serveHealth(opts.healthListen)
		if err != nil {
			return 0, err
		}
		defer stop()
	}

	detectCtx, cancel := context.WithTimeout(ctx, time.Minute)
	hops, err := detectPath(detectCtx, client, opts, stdout)
	cancel()
	if err != nil {
		return 0, err
	}
	if opts.servers == nil {
		fmt.Fprintf(stdout, "servers: the cluster IPs of Service %s, followed\n", opts.service)
	} else {
		fmt.Fprintf(stdout, "servers: %s (--ip)\n", stubdomain.FormatServers(opts.servers))
	}
	run := func(ctx context.Context) error { return followPath(ctx, client, opts, hops, logf) }
	if !opts.leaderElect {
		err = run(ctx)
	} else {
		err = leaderElected(ctx, client, opts.lease, logf, run)
	}
	if err != nil {
		return 0, err
	}
	logf("stopped")
	return exitOK, nil
}

// errLostLease ends watch when its Lease is lost: the process exits, and its supervisor restarts
// it as a candidate.
var errLostLease = errors.New("lost the leader lease")

// leaderElected runs run while this process holds the Lease, and returns when ctx ends (after
// run has returned and the Lease is released, so that a standby takes over at once), when run
// fails (its error), or when the Lease is lost (errLostLease).
func leaderElected(ctx context.Context, client kubernetes.Interface, lease kube.Lease, logf func(string, ...any), run func(context.Context) error) error {
	campaign, err := kube.NewCampaign(client, lease, logf)
	if err != nil {
		return err
	}
	return campaign.Run(ctx, func(term context.Context) error {
		if err := run(term); err != nil || ctx.Err() != nil {
			return err
		}
		return errLostLease
	})
}

// followPath runs a watcher on the hops of the query path, detects the path again every
// opts.redetect (NodeLocal DNSCache installed later, CoreDNS replacing kube-dns) and, when it
// changed, runs a watcher on the new hops instead. The hops it leaves keep what was written:
// remove is for a person to run.
func followPath(ctx context.Context, client kubernetes.Interface, opts *stubdomainOptions, hops []stubdomain.Hop, logf func(string, ...any)) error {
	for {
		var front []*stubdomain.Patcher
		for _, h := range hops[:len(hops)-1] {
			front = append(front, patcherFor(client, opts, h))
		}
		w := &stubdomain.Watcher{Patcher: patcherFor(client, opts, hops[len(hops)-1]), Hops: front,
			Zones: opts.zones, Servers: opts.servers, Logf: logf}
		if opts.servers == nil {
			w.Service = opts.service
		}
		runCtx, stop := context.WithCancel(ctx)
		changed := make(chan []stubdomain.Hop, 1)
		go func() {
			tick := time.NewTicker(opts.redetect)
			defer tick.Stop()
			for {
				select {
				case <-runCtx.Done():
					return
				case <-tick.C:
				}
				detectCtx, cancel := context.WithTimeout(runCtx, time.Minute)
				now, err := stubdomain.DetectPath(detectCtx, client, opts.dnsNamespace, opts.target)
				cancel()
				if err != nil {
					if runCtx.Err() == nil {
						logf("detecting the query path again: %v (keeping the hops as they were)", err)
					}
					continue
				}
				if !sameHops(now, hops) {
					changed <- now
					stop()
					return
				}
			}
		}()
		err := w.Run(runCtx)
		stop()
		select {
		case next := <-changed:
			for _, h := range next {
				logf("the query path changed: %s: target: %s (%s); ConfigMap %s/%s", h.Role, h.Target, h.Why, opts.dnsNamespace, h.ConfigMap)
			}
			hops = next
			continue
		default:
		}
		return err
	}
}

func sameHops(a, b []stubdomain.Hop) bool {
	return slices.EqualFunc(a, b, func(x, y stubdomain.Hop) bool { return x.Target == y.Target && x.ConfigMap == y.ConfigMap })
}

// serveHealth answers /healthz with 200 while the process serves: a liveness ping, as
// controller-runtime's healthz.Ping. A watcher that fails exits on its own.
func serveHealth(addr string) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--health-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return func() { srv.Close() }, nil
}
