// Package brokerurl checks the parts of a broker's URL that can be checked
// without the broker: the addresses of its authority (HOST[:PORT], one or
// several) and its query (each parameter once, with a value). It is the one
// home of these checks, shared by the configs of every source, so that a
// URL that could never connect (a port out of range, an empty host, a host
// with characters no name or address has, an option without its value)
// is refused when the source is made, with an error that names the part,
// rather than retried for ever.
package brokerurl

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Addr checks addr, a broker address: HOST:PORT, or HOST alone unless
// needPort. HOST is a DNS name (letters, digits, '-' and '_' in labels of
// 1 to 63 characters separated by dots, 253 characters at most, a final
// dot allowed), an IPv4 address, or an IPv6 address in brackets; PORT is
// 1 to 65535. Its errors quote the part they refuse.
func Addr(addr string, needPort bool) error {
	host, port, hasPort := addr, "", false
	if strings.HasPrefix(addr, "[") {
		end := strings.IndexByte(addr, ']')
		if end < 0 {
			return fmt.Errorf("%q: an IPv6 address in brackets needs its closing ]", addr)
		}
		host = addr[1:end]
		switch rest := addr[end+1:]; {
		case rest == "":
		case rest[0] == ':':
			port, hasPort = rest[1:], true
		default:
			return fmt.Errorf("%q: want [ADDRESS]:PORT", addr)
		}
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() || a.Is4In6() {
			return fmt.Errorf("host [%s]: not an IPv6 address", host)
		}
	} else {
		if i := strings.LastIndexByte(addr, ':'); i >= 0 {
			host, port, hasPort = addr[:i], addr[i+1:], true
		}
		if err := checkHost(host); err != nil {
			return err
		}
	}
	switch {
	case !hasPort && needPort:
		return fmt.Errorf("%q: no port: want HOST:PORT", addr)
	case !hasPort:
		return nil
	case port == "":
		return fmt.Errorf("%q: empty port after the colon", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 || strings.ContainsAny(port, "+-") {
		return fmt.Errorf("port %q: want a number from 1 to 65535", port)
	}
	return nil
}

// checkHost checks a host that is not in brackets: an IPv4 address or a
// DNS name.
func checkHost(host string) error {
	if host == "" {
		return errors.New("empty host")
	}
	if _, err := netip.ParseAddr(host); err == nil && strings.Contains(host, ":") {
		return fmt.Errorf("host %q: an IPv6 address goes in brackets, as [::1]:PORT", host)
	}
	name := strings.TrimSuffix(host, ".")
	if len(name) > 253 {
		return fmt.Errorf("host %.40q...: longer than a DNS name's 253 characters", host)
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("host %q: each dot-separated part of a name has 1 to 63 characters", host)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				if c >= 0x80 {
					return fmt.Errorf("host %q: write an international name in its ASCII form (xn--...)", host)
				}
				return fmt.Errorf("host %q: a name has only letters, digits, '-', '_' and '.'", host)
			}
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("host %q: a part of a name neither begins nor ends with '-'", host)
		}
	}
	// A name's last label is never all digits (RFC 3696): then it is
	// meant as an IPv4 address, and must be one.
	if last := labels[len(labels)-1]; strings.Trim(last, "0123456789") == "" {
		if a, err := netip.ParseAddr(host); err != nil || !a.Is4() {
			return fmt.Errorf("host %q: not an IPv4 address", host)
		}
	}
	return nil
}

// Query parses a URL's raw query into one value per parameter. Each
// parameter must be given once, and with a value: an empty one is, as
// often as not, a value that was meant to be there (a token or a file
// whose variable was empty), and would silently mean none.
func Query(rawQuery string) (map[string]string, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		var ee url.EscapeError
		if errors.As(err, &ee) {
			// The escape may be part of a secret: name no character of it.
			return nil, errors.New("URL query: a % not followed by two hexadecimal digits")
		}
		return nil, fmt.Errorf("URL query: %w", err)
	}
	one := make(map[string]string, len(q))
	for _, k := range slices.Sorted(maps.Keys(q)) {
		v := q[k]
		switch {
		case len(v) != 1:
			return nil, fmt.Errorf("URL query parameter %q given %d times", k, len(v))
		case v[0] == "":
			return nil, fmt.Errorf("URL query parameter %q has no value", k)
		}
		one[k] = v[0]
	}
	return one, nil
}
