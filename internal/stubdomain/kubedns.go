package stubdomain

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
)

// stubDomainsEntry is one member of the stubDomains object, kept as it came in.
type stubDomainsEntry struct {
	key   string          // the domain as written
	value json.RawMessage // its value, unparsed
}

// SetStubDomain returns stubDomains (the `stubDomains` key of the kube-dns ConfigMap, a JSON
// object {"zone": ["ip", ...]}) with zone forwarding to servers, replacing whatever zone had.
// Every other domain, its value and its position are kept; "" (key absent) is an empty object.
//
// The zone's entry replaces the first key that names it (keys compare case-insensitively and
// without a trailing dot) and is spelled as the normalized zone; further keys naming it are
// dropped. A new zone is appended. The result is indented JSON (json.Indent, two spaces) ending
// in a newline, in input order. When zone already forwards to exactly servers, stubDomains is
// returned unchanged, so a second apply is a no-op whatever the input's formatting.
//
// A port of 0 or 53 is left out ("10.0.0.53", "fd00::35"); others are written "10.0.0.53:5353"
// and "[fd00::35]:5353". It is an error when zone already has a value that is not a list of
// strings: kube-dns would reject it, and we do not overwrite what we do not understand.
func SetStubDomain(stubDomains, zone string, servers []netip.AddrPort) (string, error) {
	z, err := normalizeZone(zone)
	if err != nil {
		return "", err
	}
	want, err := formatServers(servers)
	if err != nil {
		return "", err
	}
	entries, err := parseStubDomains(stubDomains)
	if err != nil {
		return "", err
	}
	var matches []int
	for i, e := range entries {
		if keyNamesZone(e.key, z) {
			if _, err := stubDomainValue(e); err != nil {
				return "", err
			}
			matches = append(matches, i)
		}
	}
	if len(matches) == 1 {
		if have, _ := stubDomainValue(entries[matches[0]]); slices.Equal(have, want) {
			return stubDomains, nil
		}
	}

	value, err := json.Marshal(want)
	if err != nil {
		return "", err
	}
	ours := stubDomainsEntry{key: z, value: value}
	if len(matches) == 0 {
		entries = append(entries, ours)
	} else {
		first := matches[0]
		out := make([]stubDomainsEntry, 0, len(entries))
		for i, e := range entries {
			switch {
			case i == first:
				out = append(out, ours)
			case keyNamesZone(e.key, z):
				// A second spelling of the zone (e.g. "global" and "global."): drop it.
			default:
				out = append(out, e)
			}
		}
		entries = out
	}
	return formatStubDomains(entries)
}

// RemoveStubDomain returns stubDomains without zone (every key naming it). The other domains are
// kept, in order, in the format SetStubDomain writes; an object left empty is "" (the caller
// then deletes the key). stubDomains without zone is returned unchanged.
func RemoveStubDomain(stubDomains, zone string) (string, error) {
	z, err := normalizeZone(zone)
	if err != nil {
		return "", err
	}
	entries, err := parseStubDomains(stubDomains)
	if err != nil {
		return "", err
	}
	kept := slices.DeleteFunc(slices.Clone(entries), func(e stubDomainsEntry) bool { return keyNamesZone(e.key, z) })
	if len(kept) == len(entries) {
		return stubDomains, nil
	}
	if len(kept) == 0 {
		return "", nil
	}
	return formatStubDomains(kept)
}

// StubDomainServers returns the servers zone forwards to in stubDomains, as written there, or
// nil when zone is not configured. When several keys name the zone the last one wins, as it does
// for kube-dns's own JSON decoding.
func StubDomainServers(stubDomains, zone string) ([]string, error) {
	z, err := normalizeZone(zone)
	if err != nil {
		return nil, err
	}
	entries, err := parseStubDomains(stubDomains)
	if err != nil {
		return nil, err
	}
	var servers []string
	for _, e := range entries {
		if !keyNamesZone(e.key, z) {
			continue
		}
		if servers, err = stubDomainValue(e); err != nil {
			return nil, err
		}
	}
	return servers, nil
}

// parseStubDomains reads the stubDomains object, keeping its members' order and raw values.
func parseStubDomains(s string) ([]stubDomainsEntry, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, jsonError(s, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("stubDomains is not a JSON object but %s", jsonKind(tok))
	}
	var entries []stubDomainsEntry
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, jsonError(s, err)
		}
		key, ok := tok.(string)
		if !ok { // encoding/json reports a non-string key as a syntax error; be safe anyway
			return nil, fmt.Errorf("stubDomains is not valid JSON: object key %v is not a string", tok)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, jsonError(s, err)
		}
		entries = append(entries, stubDomainsEntry{key: key, value: raw})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, jsonError(s, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err != nil {
			return nil, jsonError(s, err)
		}
		return nil, fmt.Errorf("stubDomains is not valid JSON: more data after the object at offset %d", dec.InputOffset())
	}
	return entries, nil
}

// jsonError names a decoding problem with its position in s.
func jsonError(s string, err error) error {
	var syntax *json.SyntaxError
	switch {
	case errors.As(err, &syntax):
		line := 1 + strings.Count(s[:min(int(syntax.Offset), len(s))], "\n")
		return fmt.Errorf("stubDomains is not valid JSON: %s at offset %d (line %d)", syntax.Error(), syntax.Offset, line)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("stubDomains is not valid JSON: unexpected end of input at offset %d", len(s))
	default:
		return fmt.Errorf("stubDomains is not valid JSON: %w", err)
	}
}

// jsonKind names the JSON value that tok starts.
func jsonKind(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '[' {
			return "an array"
		}
		return fmt.Sprintf("%q", string(v))
	case string:
		return "a string"
	case json.Number, float64:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", tok)
}

// stubDomainValue decodes e's value as kube-dns would: a list of strings.
func stubDomainValue(e stubDomainsEntry) ([]string, error) {
	var servers []string
	if bytes.Equal(bytes.TrimSpace(e.value), []byte("null")) || json.Unmarshal(e.value, &servers) != nil {
		return nil, fmt.Errorf("stubDomains[%q] is not a list of strings: %s", e.key, compactJSON(e.value))
	}
	if servers == nil {
		servers = []string{} // configured, with no servers
	}
	return servers, nil
}

// formatStubDomains writes entries as an indented JSON object, in order, ending in a newline.
func formatStubDomains(entries []stubDomainsEntry) (string, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range entries {
		if i > 0 {
			b.WriteByte(',')
		}
		key, err := marshalNoEscape(e.key)
		if err != nil {
			return "", err
		}
		b.Write(key)
		b.WriteByte(':')
		if err := json.Compact(&b, e.value); err != nil {
			return "", fmt.Errorf("stubDomains[%q]: %w", e.key, err)
		}
	}
	b.WriteByte('}')
	var out bytes.Buffer
	if err := json.Indent(&out, b.Bytes(), "", "  "); err != nil {
		return "", err
	}
	out.WriteByte('\n')
	return out.String(), nil
}

// marshalNoEscape encodes v without HTML escaping, so keys read back exactly as written.
func marshalNoEscape(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// compactJSON is raw on one line, for error messages.
func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	s := b.String()
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

// keyNamesZone reports whether a stubDomains key names zone (already normalized).
func keyNamesZone(key, zone string) bool {
	return strings.EqualFold(strings.TrimSuffix(key, "."), zone)
}

// normalizeZone lowercases zone and strips one trailing dot; it must be a plain domain name
// (letters, digits, '-', '_' and dots between non-empty labels), and not the root.
func normalizeZone(zone string) (string, error) {
	z := strings.ToLower(strings.TrimSuffix(zone, "."))
	if z == "" {
		return "", fmt.Errorf("zone %q: the root zone cannot be forwarded, name a zone such as \"global\"", zone)
	}
	if len(z) > 253 {
		return "", fmt.Errorf("zone %q is longer than 253 characters", zone)
	}
	for label := range strings.SplitSeq(z, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("zone %q is not a domain name: empty or over-long label", zone)
		}
		for _, c := range label {
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("zone %q is not a domain name: character %q", zone, c)
			}
		}
	}
	return z, nil
}

// formatServers writes servers as kube-dns and CoreDNS's forward both take them: the bare
// address for port 0 or 53, "10.0.0.53:5353" or "[fd00::35]:5353" otherwise. IPv4-mapped IPv6
// addresses are written as IPv4.
func formatServers(servers []netip.AddrPort) ([]string, error) {
	if len(servers) == 0 {
		return nil, errors.New("no servers to forward to")
	}
	out := make([]string, 0, len(servers))
	for i, s := range servers {
		a := s.Addr().Unmap()
		switch {
		case !a.IsValid():
			return nil, fmt.Errorf("server %d is not a valid IP address", i+1)
		case a.Zone() != "":
			return nil, fmt.Errorf("server %s: an IPv6 zone (%%%s) cannot be used for a cluster DNS server", s, a.Zone())
		case a.IsUnspecified():
			return nil, fmt.Errorf("server %s: the unspecified address is not a DNS server", s)
		}
		if p := s.Port(); p != 0 && p != 53 {
			out = append(out, netip.AddrPortFrom(a, p).String())
		} else {
			out = append(out, a.String())
		}
	}
	return out, nil
}
