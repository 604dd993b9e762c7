// Package hostname validates the host names of ServiceEntries as the names the plugin serves.
package hostname

import (
	"fmt"
	"strconv"
	"strings"
)

// Canonical returns host as a lower-case FQDN, or why it is not a name we can serve.
// A single leading "*." label makes a wildcard; "*" anywhere else is an error.
func Canonical(host string) (string, error) {
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if name == "" {
		return "", fmt.Errorf("empty")
	}
	if len(name) > 253 {
		return "", fmt.Errorf("longer than 253 characters")
	}
	labels := strings.Split(name, ".")
	for i, l := range labels {
		if l == "*" && i == 0 && len(labels) > 1 {
			continue
		}
		if err := CheckLabel(l); err != nil {
			return "", fmt.Errorf("label %q: %v", l, err)
		}
	}
	return name + ".", nil
}

// CheckLabel reports why l cannot be a label of a host name we serve: letters (lower case),
// digits, hyphens inside, and underscores, at most 63 octets.
func CheckLabel(l string) error {
	if l == "" {
		return fmt.Errorf("empty label")
	}
	if len(l) > 63 {
		return fmt.Errorf("longer than 63 characters")
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			if c == '*' {
				return fmt.Errorf("a wildcard must be the whole first label")
			}
			return fmt.Errorf("character %s is not allowed", strconv.QuoteRune(rune(c)))
		}
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return fmt.Errorf("starts or ends with a hyphen")
	}
	return nil
}
