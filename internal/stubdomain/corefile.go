package stubdomain

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/coredns/caddy/caddyfile"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/parse"
	"github.com/coredns/coredns/plugin/pkg/transport"
	"github.com/miekg/dns"
)

// ErrForeignBlock is wrapped by SetServerBlock's error when the Corefile already has a server
// block for the zone (on port 53) that is not between our markers.
var ErrForeignBlock = errors.New("a server block for the zone exists that coredns-istio did not write")

const (
	// corefileName labels the Corefile in parse errors ("Corefile:12 - ...").
	corefileName = "Corefile"
	// markerTool is the words after "# BEGIN"/"# END" that make a marker line ours.
	markerTool = "coredns-istio stubdomain"
	// maxForwardTo is the most upstreams CoreDNS's forward plugin takes ("more than 15 TOs").
	maxForwardTo = 15
)

// ServerBlock is the marked server block that forwards zone to servers, on its own (markers
// included, "\n" line endings, ending in a newline): for AKS's coredns-custom ConfigMap, whose
// `<name>.server` keys CoreDNS imports as server blocks. It is the text SetServerBlock places in
// a Corefile. zone is normalized (lowercase, no trailing dot); servers are written as in
// SetStubDomain. Servers must be valid addresses: an invalid one is left out (SetServerBlock and
// SetStubDomain reject them with an error instead).
func ServerBlock(zone string, servers []netip.AddrPort) string {
	z, err := normalizeZone(zone)
	if err != nil {
		z = strings.ToLower(strings.TrimSuffix(zone, "."))
	}
	var hosts []string
	for _, s := range servers {
		if f, err := formatServers([]netip.AddrPort{s}); err == nil {
			hosts = append(hosts, f...)
		}
	}
	return renderBlock(z, hosts, "\n")
}

// renderBlock is the marked block for zone (normalized) forwarding to hosts, each line ending
// in eol.
func renderBlock(zone string, hosts []string, eol string, directives ...string) string {
	lines := []string{
		"# BEGIN " + markerTool + " " + zone + " (managed by `coredns-istio stubdomain`; do not edit)",
		zone + ":53 {",
	}
	for _, d := range directives {
		lines = append(lines, "    "+d)
	}
	lines = append(lines,
		"    errors",
		"    cache 30",
		"    forward . "+strings.Join(hosts, " "),
		"}",
		"# END "+markerTool+" "+zone,
	)
	return strings.Join(lines, eol) + eol
}

// SetServerBlock returns corefile with one marked server block forwarding zone to servers (see
// ServerBlock): replaced in place where our markers for zone already are, otherwise appended
// after a blank line. Nothing outside the markers changes, byte for byte; the block uses the
// Corefile's line ending (that of its first line). Setting the same servers twice gives the same
// bytes as once.
//
// It is an error, wrapping ErrForeignBlock, when a server block outside our markers already
// serves zone on port 53 (keys such as "global", "global.:53", "dns://GLOBAL:53", or one key of
// several). It is an error, naming the line, when corefile does not parse (ValidateCorefile,
// ignoring what is between our markers) or has unbalanced or duplicated markers for zone; the
// caller then writes nothing. The result is validated before it is returned. directives, such
// as a bind line, open the block.
func SetServerBlock(corefile, zone string, servers []netip.AddrPort, directives ...string) (string, error) {
	z, err := normalizeZone(zone)
	if err != nil {
		return "", err
	}
	hosts, err := formatServers(servers)
	if err != nil {
		return "", err
	}
	if len(hosts) > maxForwardTo {
		return "", fmt.Errorf("%d servers: CoreDNS's forward plugin takes at most %d", len(hosts), maxForwardTo)
	}
	lines := splitLines(corefile)
	r, found, err := findRegion(lines, z)
	if err != nil {
		return "", err
	}
	outside := corefile
	if found {
		outside = blankLines(corefile, lines, r.begin, r.end)
	}
	if err := ValidateCorefile(outside); err != nil {
		return "", err
	}
	if err := checkForeign(outside, z); err != nil {
		return "", err
	}

	eol := lineEnding(lines)
	var out string
	switch {
	case found:
		block := renderBlock(z, hosts, eol, directives...)
		endLine := lines[r.end]
		if endLine.eol == "" { // the END marker ends the Corefile without a line ending: keep it so
			block = strings.TrimSuffix(block, eol)
		}
		out = corefile[:lines[r.begin].start] + block + corefile[endLine.next:]
	case corefile == "":
		out = renderBlock(z, hosts, eol, directives...)
	case strings.HasSuffix(corefile, "\n"):
		out = corefile + eol + renderBlock(z, hosts, eol, directives...)
	default:
		// No line ending after the last line: end it, add the blank line, and leave the block
		// without one, so that RemoveServerBlock gives back exactly corefile.
		out = corefile + eol + eol + strings.TrimSuffix(renderBlock(z, hosts, eol, directives...), eol)
	}
	if err := ValidateCorefile(out); err != nil {
		return "", fmt.Errorf("the Corefile with the block for %s would not parse (a bug in coredns-istio; nothing written): %w", z, err)
	}
	return out, nil
}

// RemoveServerBlock returns corefile without our marked block for zone and the blank line before
// it (the one SetServerBlock adds), so that a Corefile SetServerBlock appended to comes back byte
// for byte. A Corefile without the block is returned unchanged. Unbalanced or duplicated markers,
// or a result that does not parse, are errors naming the line.
func RemoveServerBlock(corefile, zone string) (string, error) {
	z, err := normalizeZone(zone)
	if err != nil {
		return "", err
	}
	lines := splitLines(corefile)
	r, found, err := findRegion(lines, z)
	if err != nil || !found {
		return corefile, err
	}
	start, end := lines[r.begin].start, lines[r.end].next
	if r.begin > 0 && strings.TrimSuffix(lines[r.begin-1].text, "\r") == "" {
		start = lines[r.begin-1].start // the blank line we added
	}
	if lines[r.end].eol == "" && start > 0 {
		// The block ended the Corefile without a line ending: so did the line before it.
		start = strings.LastIndexByte(corefile[:start], '\n')
		if start > 0 && corefile[start-1] == '\r' && lineEnding(lines) == "\r\n" {
			start-- // the CR of the CRLF that SetServerBlock wrote, not one of the text's
		}
	}
	out := corefile[:start] + corefile[end:]
	if err := ValidateCorefile(out); err != nil {
		return "", fmt.Errorf("the Corefile without the block for %s would not parse; nothing written: %w", z, err)
	}
	return out, nil
}

// ServerBlockServers returns the forward targets of our marked block for zone, as written there,
// or nil when the Corefile has no such block.
func ServerBlockServers(corefile, zone string) ([]string, error) {
	z, err := normalizeZone(zone)
	if err != nil {
		return nil, err
	}
	lines := splitLines(corefile)
	r, found, err := findRegion(lines, z)
	if err != nil || !found {
		return nil, err
	}
	inside := corefile[lines[r.begin].start:lines[r.end].next]
	toks := tokenize(inside)
	for i, t := range toks {
		if t.Text != "forward" || !startsLine(toks, i) {
			continue
		}
		var args []string
		for j := i + 1; j < len(toks) && !startsLine(toks, j) && toks[j].Text != "{"; j++ {
			args = append(args, toks[j].Text)
		}
		if len(args) < 2 {
			return nil, fmt.Errorf("%s:%d: the forward line of the coredns-istio block for %s names no servers",
				corefileName, r.begin+t.Line, z)
		}
		return args[1:], nil
	}
	return nil, fmt.Errorf("%s:%d: the coredns-istio block for %s has no forward line", corefileName, r.begin+1, z)
}

// ValidateCorefile parses corefile with CoreDNS's own parser and directive list, and checks
// every server block key as CoreDNS does when it starts (transport, zone, port, reverse CIDR
// notation), and that no zone and port is served twice by blocks without `bind` or `view`.
// Errors name the line ("Corefile:12 - ..."). `import` lines that name files are skipped rather
// than read: those files live in the CoreDNS pod, not here. Snippet imports are expanded.
func ValidateCorefile(corefile string) error {
	text := withoutFileImports(corefile)
	parsed, err := caddyfile.Parse(corefileName, strings.NewReader(text), dnsserver.Directives)
	if err != nil {
		return fmt.Errorf("invalid Corefile: %w", err)
	}
	blocks := serverBlocks(text)
	type seenAt struct{ line int }
	seen := map[zoneAddr]seenAt{}
	for i, b := range blocks {
		if b.unclosed {
			// The parser lets EOF close a block whose last token is a nested "}".
			return fmt.Errorf("invalid Corefile: %s:%d - unbalanced braces: the server block %q opened here is never closed",
				corefileName, b.line, strings.Join(b.keys, " "))
		}
		shared := false // bind and view let two blocks share a zone and port
		if len(parsed) == len(blocks) {
			t := parsed[i].Tokens
			shared = len(t["bind"]) > 0 || len(t["view"]) > 0
		}
		for _, key := range b.keys {
			if key == "{" || key == "}" {
				// The parser takes a stray "}" at the top level for a server block key.
				return fmt.Errorf("invalid Corefile: %s:%d - unbalanced braces: unexpected %q outside a server block", corefileName, b.line, key)
			}
			if hasPlaceholder(key) {
				continue
			}
			zas, err := keyZoneAddrs(key)
			if err != nil {
				return fmt.Errorf("invalid Corefile: %s:%d - server block key %q: %w", corefileName, b.line, key, err)
			}
			if shared || len(parsed) != len(blocks) {
				continue
			}
			for _, za := range zas {
				if prev, ok := seen[za]; ok {
					return fmt.Errorf("invalid Corefile: %s:%d - %s is already served by the server block at line %d",
						corefileName, b.line, za, prev.line)
				}
				seen[za] = seenAt{b.line}
			}
		}
	}
	return nil
}

// Bind returns the arguments of the first bind directive in corefile's server blocks, or "":
// a block added to NodeLocal DNSCache's Corefile must listen where the cache's own blocks do
// (169.254.20.10 and the kube-dns ClusterIP, as the installer rendered them), not on every
// address of the node.
func Bind(corefile string) string {
	blocks, err := caddyfile.Parse(corefileName, strings.NewReader(withoutFileImports(corefile)), nil)
	if err != nil {
		return ""
	}
	for _, b := range blocks {
		toks := b.Tokens["bind"]
		if len(toks) < 2 {
			continue
		}
		var args []string
		for _, t := range toks[1:] {
			if t.Line != toks[0].Line || t.Text == "{" {
				break
			}
			args = append(args, t.Text)
		}
		if len(args) > 0 {
			return strings.Join(args, " ")
		}
	}
	return ""
}

// HasReload reports whether the Corefile has the reload plugin in at least one server block:
// without it CoreDNS does not notice that its ConfigMap changed until it restarts. A Corefile
// that does not parse has no reload.
func HasReload(corefile string) bool {
	blocks, err := caddyfile.Parse(corefileName, strings.NewReader(withoutFileImports(corefile)), nil)
	if err != nil {
		return false
	}
	for _, b := range blocks {
		if len(b.Tokens["reload"]) > 0 {
			return true
		}
	}
	return false
}

// checkForeign returns an error wrapping ErrForeignBlock when a server block of corefile (with
// our region already blanked) serves zone on port 53 over plain DNS.
func checkForeign(corefile, zone string) error {
	want := zoneAddr{transport: transport.DNS, zone: zone + ".", port: transport.Port}
	for _, b := range serverBlocks(withoutFileImports(corefile)) {
		for _, key := range b.keys {
			zas, err := keyZoneAddrs(key)
			if err != nil || hasPlaceholder(key) {
				continue // ValidateCorefile reports the first; the second only the pod can resolve
			}
			for _, za := range zas {
				if za == want {
					return fmt.Errorf("%s:%d: server block %q already serves %s: %w",
						corefileName, b.line, strings.Join(b.keys, " "), za, ErrForeignBlock)
				}
			}
		}
	}
	return nil
}

// hasPlaceholder reports whether key has an environment placeholder ({$VAR} or {%VAR%}), which
// only the CoreDNS pod can resolve: such keys are neither checked nor matched.
func hasPlaceholder(key string) bool {
	return strings.Contains(key, "{$") || strings.Contains(key, "{%")
}

// zoneAddr is a normalized server block key, as CoreDNS keys its servers.
type zoneAddr struct{ transport, zone, port string }

func (z zoneAddr) String() string { return z.transport + "://" + z.zone + ":" + z.port }

// keyZoneAddrs normalizes a server block key the way dnsserver's InspectServerBlocks does:
// strip the transport, split host(s) and port (a reverse CIDR can give several zones), check the
// fully qualified names, default the port per transport, lowercase and qualify the zones.
func keyZoneAddrs(key string) ([]zoneAddr, error) {
	trans, k := parse.Transport(key)
	hosts, port, err := plugin.SplitHostPort(k)
	for _, h := range hosts {
		if _, _, err := plugin.SplitHostPort(dns.Fqdn(h)); err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, err
	}
	if port == "" {
		switch trans {
		case transport.DNS:
			port = transport.Port
		case transport.TLS:
			port = transport.TLSPort
		case transport.QUIC:
			port = transport.QUICPort
		case transport.GRPC:
			port = transport.GRPCPort
		case transport.HTTPS, transport.HTTPS3:
			port = transport.HTTPSPort
		}
	}
	if port != "" {
		if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			return nil, fmt.Errorf("port %s is out of range", port)
		}
	}
	zas := make([]zoneAddr, 0, len(hosts))
	for _, h := range hosts {
		zas = append(zas, zoneAddr{transport: trans, zone: plugin.Name(h).Normalize(), port: port})
	}
	return zas, nil
}

// line is one line of a Corefile: text without its line ending, which is eol ("\n", or "" for
// a last line without one; a "\r" before the "\n" stays in text).
type line struct {
	start, next int // byte offsets of the line and of the line after it
	text, eol   string
}

// splitLines splits s into lines, offsets included. "" has no lines.
func splitLines(s string) []line {
	var out []line
	for start := 0; start < len(s); {
		end := strings.IndexByte(s[start:], '\n')
		if end < 0 {
			out = append(out, line{start: start, next: len(s), text: s[start:]})
			break
		}
		end += start
		out = append(out, line{start: start, next: end + 1, text: s[start:end], eol: "\n"})
		start = end + 1
	}
	return out
}

// lineEnding is the line ending of the first line that has one ("\r\n" or "\n"). Without any,
// it is "\r\n" when the text ends in a CR (a "\n" after it would make a CRLF, and the next
// apply would see one), else "\n".
func lineEnding(lines []line) string {
	for _, l := range lines {
		if l.eol != "" {
			if strings.HasSuffix(l.text, "\r") {
				return "\r\n"
			}
			return "\n"
		}
	}
	if len(lines) > 0 && strings.HasSuffix(lines[len(lines)-1].text, "\r") {
		return "\r\n"
	}
	return "\n"
}

// blankLines returns s with lines[from..to] emptied (their line endings kept), so that line
// numbers do not move.
func blankLines(s string, lines []line, from, to int) string {
	var b strings.Builder
	b.WriteString(s[:lines[from].start])
	for _, l := range lines[from : to+1] {
		if strings.HasSuffix(l.text, "\r") {
			b.WriteByte('\r')
		}
		b.WriteString(l.eol)
	}
	b.WriteString(s[lines[to].next:])
	return b.String()
}

// region is our marked block: the indexes of its BEGIN and END lines.
type region struct{ begin, end int }

// marker is a BEGIN or END marker line.
type marker struct {
	begin bool
	zone  string // normalized as far as we can
	idx   int    // line index
}

// parseMarker recognizes "# BEGIN coredns-istio stubdomain ZONE ..." and "# END ..." lines,
// whatever the indentation.
func parseMarker(text string) (marker, bool) {
	f := strings.Fields(text)
	if len(f) < 5 || f[0] != "#" || (f[1] != "BEGIN" && f[1] != "END") || f[2]+" "+f[3] != markerTool {
		return marker{}, false
	}
	return marker{begin: f[1] == "BEGIN", zone: strings.ToLower(strings.TrimSuffix(f[4], "."))}, true
}

// findRegion finds our markers for zone. Two BEGINs, two ENDs, a BEGIN without END (or the
// reverse), an END before its BEGIN, or another coredns-istio marker between them is an error.
func findRegion(lines []line, zone string) (region, bool, error) {
	var begins, ends []int
	var all []marker
	for i, l := range lines {
		m, ok := parseMarker(l.text)
		if !ok {
			continue
		}
		m.idx = i
		all = append(all, m)
		if m.zone != zone {
			continue
		}
		if m.begin {
			begins = append(begins, i)
		} else {
			ends = append(ends, i)
		}
	}
	switch {
	case len(begins) > 1:
		return region{}, false, fmt.Errorf("%s:%d: a second BEGIN marker for zone %s (the first is at line %d); fix the Corefile by hand",
			corefileName, begins[1]+1, zone, begins[0]+1)
	case len(ends) > 1:
		return region{}, false, fmt.Errorf("%s:%d: a second END marker for zone %s (the first is at line %d); fix the Corefile by hand",
			corefileName, ends[1]+1, zone, ends[0]+1)
	case len(begins) == 1 && len(ends) == 0:
		return region{}, false, fmt.Errorf("%s:%d: BEGIN marker for zone %s without its END marker; fix the Corefile by hand",
			corefileName, begins[0]+1, zone)
	case len(begins) == 0 && len(ends) == 1:
		return region{}, false, fmt.Errorf("%s:%d: END marker for zone %s without its BEGIN marker; fix the Corefile by hand",
			corefileName, ends[0]+1, zone)
	case len(begins) == 0:
		return region{}, false, nil
	}
	r := region{begin: begins[0], end: ends[0]}
	if r.end < r.begin {
		return region{}, false, fmt.Errorf("%s:%d: END marker for zone %s comes before its BEGIN marker at line %d; fix the Corefile by hand",
			corefileName, r.end+1, zone, r.begin+1)
	}
	for _, m := range all {
		if m.idx > r.begin && m.idx < r.end {
			return region{}, false, fmt.Errorf("%s:%d: a coredns-istio marker for zone %s inside the block for zone %s (lines %d-%d); fix the Corefile by hand",
				corefileName, m.idx+1, m.zone, zone, r.begin+1, r.end+1)
		}
	}
	return r, true, nil
}

// tokenize lexes s with the Caddyfile lexer (comments dropped, quotes removed).
func tokenize(s string) []caddyfile.Token {
	d := caddyfile.NewDispenser(corefileName, strings.NewReader(s))
	var toks []caddyfile.Token
	for d.Next() {
		toks = append(toks, caddyfile.Token{Text: d.Val(), Line: d.Line()})
	}
	return toks
}

// startsLine reports whether toks[i] is the first token on its line, as the parser decides it.
func startsLine(toks []caddyfile.Token, i int) bool {
	if i == 0 {
		return true
	}
	prev := toks[i-1]
	return prev.Line+strings.Count(prev.Text, "\n") < toks[i].Line
}

// withoutFileImports returns corefile with each `import FILE-OR-GLOB` line emptied (line
// numbers kept): those files are in the CoreDNS pod, and the parser would look for them on this
// machine's disk. Imports of snippets defined in the Corefile stay, the parser expands them.
func withoutFileImports(corefile string) string {
	toks := tokenize(corefile)
	snippets := map[string]bool{}
	for i, t := range toks {
		if startsLine(toks, i) && len(t.Text) > 2 && strings.HasPrefix(t.Text, "(") && strings.HasSuffix(t.Text, ")") {
			snippets[t.Text[1:len(t.Text)-1]] = true
		}
	}
	var blank []int // line numbers, 1-based
	for i := 0; i+1 < len(toks); i++ {
		if toks[i].Text != "import" || !startsLine(toks, i) || startsLine(toks, i+1) {
			continue
		}
		if i+2 < len(toks) && !startsLine(toks, i+2) {
			continue // more than one argument: leave it to the parser to complain
		}
		if snippets[toks[i+1].Text] || strings.Contains(toks[i+1].Text, "\n") {
			continue
		}
		blank = append(blank, toks[i].Line)
	}
	if len(blank) == 0 {
		return corefile
	}
	lines := splitLines(corefile)
	out := corefile
	for j := len(blank) - 1; j >= 0; j-- {
		if n := blank[j] - 1; n < len(lines) {
			out = blankLines(out, lines, n, n)
		}
	}
	return out
}

// serverBlock is a server block's keys and the line they start on.
type serverBlock struct {
	keys     []string
	line     int
	unclosed bool // its "{" has no matching "}"
}

// serverBlocks walks corefile's top level as the Caddyfile parser does and returns each server
// block's keys with their line: keys run to the end of the line (or on, after a trailing comma)
// or to "{", and a body runs to its matching "}". Snippet definitions and top-level imports are
// skipped. It expects a Corefile that parses; on one that does not it returns what it can.
func serverBlocks(corefile string) []serverBlock {
	toks := tokenize(corefile)
	var blocks []serverBlock
	for i := 0; i < len(toks); {
		if toks[i].Text == "import" {
			i++
			if i < len(toks) && !startsLine(toks, i) {
				i++
			}
			continue
		}
		b := serverBlock{line: toks[i].Line}
		for i < len(toks) && toks[i].Text != "{" {
			key := toks[i].Text
			more := strings.HasSuffix(key, ",")
			if key = strings.TrimSuffix(key, ","); key != "" {
				b.keys = append(b.keys, key)
			}
			i++
			if i < len(toks) && !more && startsLine(toks, i) {
				break
			}
		}
		// The body: from "{" to its matching "}"; without braces, up to a stray "}" or the end.
		depth, braced := 0, false
		if i < len(toks) && toks[i].Text == "{" {
			depth, braced = 1, true
			i++
		}
		for ; i < len(toks); i++ {
			switch toks[i].Text {
			case "{":
				depth++
			case "}":
				depth--
			}
			if depth <= 0 && toks[i].Text == "}" {
				i++
				break
			}
		}
		b.unclosed = braced && depth > 0
		if len(b.keys) == 1 && strings.HasPrefix(b.keys[0], "(") && strings.HasSuffix(b.keys[0], ")") {
			continue // a snippet definition
		}
		if len(b.keys) > 0 {
			blocks = append(blocks, b)
		}
	}
	return blocks
}
