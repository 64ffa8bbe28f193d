package limit

import (
	"net/http"
	"net/netip"
	"strings"
)

// Bounds of what ClientAddr reads of the forwarding headers: the hops it
// looks at, from the nearest, the bytes of the header values it scans,
// and the length of one hop's element and node.
const (
	maxHops    = 32
	maxScan    = 4 << 10
	maxElement = 256
	maxNode    = 64
)

// ClientAddr returns the address of the client of a request that came from
// remoteAddr ("IP:port", as http.Request.RemoteAddr) with header h.
//
// It is the remote address, unless that address is in trusted: then it is
// read from the Forwarded header (RFC 7239, the for= parameters) or the
// X-Forwarded-For header, walking from the rightmost hop (the one the
// nearest proxy added) to the left, past every hop that is itself a
// trusted proxy. A hop that cannot be read (unknown, obfuscated, too long)
// ends the walk at the last trusted hop seen, since nothing to its left
// can be believed; so does a walk longer than a few dozen hops. When both
// headers are present they must name the same client, or neither is
// believed and the remote address is the client: a trusted proxy that sets
// one of them passes the other on from the client unchanged, so a mismatch
// means a forged header.
//
// The returned address is unmapped (an IPv4 client over IPv6 is IPv4) and
// has no zone. It is invalid only if remoteAddr cannot be parsed.
func ClientAddr(remoteAddr string, h http.Header, trusted []netip.Prefix) netip.Addr {
	remote := parseRemote(remoteAddr)
	if !remote.IsValid() || !contains(trusted, remote) {
		return remote
	}
	fwd, okF := walk(h.Values("Forwarded"), remote, trusted, forwardedNode)
	xff, okX := walk(h.Values("X-Forwarded-For"), remote, trusted, parseNode)
	switch {
	case okF && okX && fwd != xff:
		return remote
	case okF:
		return fwd
	default:
		return xff
	}
}

// parseRemote parses an http.Request.RemoteAddr.
func parseRemote(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return normal(ap.Addr())
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return normal(a)
	}
	return netip.Addr{}
}

func normal(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

func contains(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// walk reads the hops of a forwarding header, given as its lines, from the
// right, and returns the rightmost address that is not in trusted, or the
// last trusted one seen (starting with remote) if a hop cannot be read
// first or all of them are trusted. It reports false if the header has no
// hop at all.
func walk(lines []string, remote netip.Addr, trusted []netip.Prefix, node func(string) (netip.Addr, bool)) (netip.Addr, bool) {
	last, present := remote, false
	budget, hops := maxScan, 0
	for i := len(lines) - 1; i >= 0; i-- {
		line := lines[i]
		for line != "" {
			elem := line
			if j := strings.LastIndexByte(line, ','); j >= 0 {
				elem, line = line[j+1:], line[:j]
			} else {
				line = ""
			}
			if budget -= len(elem) + 1; budget < 0 {
				return last, true
			}
			elem = strings.Trim(elem, " \t")
			if elem == "" {
				continue // an empty list element claims nothing
			}
			present = true
			if hops++; hops > maxHops || len(elem) > maxElement {
				return last, true
			}
			a, ok := node(elem)
			if !ok {
				return last, true
			}
			if !contains(trusted, a) {
				return a, true
			}
			last = a
		}
	}
	return last, present
}

// forwardedNode returns the address in the for= parameter of an element of
// a Forwarded header, such as `for=192.0.2.60;proto=https` or
// `for="[2001:db8::1]:4711"`. It reports false if there is none, or two,
// or if it is not an IP address (unknown, an obfuscated identifier).
func forwardedNode(elem string) (netip.Addr, bool) {
	var value string
	found := false
	for elem != "" {
		var pair string
		pair, elem, _ = strings.Cut(elem, ";")
		name, v, ok := strings.Cut(strings.Trim(pair, " \t"), "=")
		if !ok || !strings.EqualFold(name, "for") {
			continue
		}
		if found {
			return netip.Addr{}, false
		}
		value, found = v, true
	}
	if !found {
		return netip.Addr{}, false
	}
	if strings.HasPrefix(value, `"`) {
		if len(value) < 2 || !strings.HasSuffix(value, `"`) {
			return netip.Addr{}, false
		}
		value = value[1 : len(value)-1]
		if strings.ContainsAny(value, `"\`) {
			return netip.Addr{}, false
		}
	}
	return parseNode(value)
}

// parseNode parses a node of a forwarding header: an IPv4 or IPv6 address,
// with a port or not, IPv6 in brackets or not.
func parseNode(s string) (netip.Addr, bool) {
	if s == "" || len(s) > maxNode {
		return netip.Addr{}, false
	}
	if strings.HasPrefix(s, "[") {
		ip, rest, ok := strings.Cut(s[1:], "]")
		if !ok || rest != "" && (rest[0] != ':' || !validPort(rest[1:])) {
			return netip.Addr{}, false
		}
		a, err := netip.ParseAddr(ip)
		if err != nil || !a.Is6() {
			return netip.Addr{}, false
		}
		return normal(a), true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return normal(a), true
	}
	ip, port, ok := strings.Cut(s, ":")
	if !ok || !validPort(port) {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is4() {
		return netip.Addr{}, false
	}
	return a, true
}

// validPort reports whether s is a port number: 1 to 5 digits.
func validPort(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// clientGroup returns the client that a client address counts as, for the
// limit per client: an IPv4 address alone (a /32), an IPv6 address's
// prefix of ipv6Bits bits. An invalid address gives the zero Prefix.
func clientGroup(a netip.Addr, ipv6Bits int) netip.Prefix {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.WithZone("").Prefix(ipv6Bits)
		return p
	}
	return netip.PrefixFrom(a, a.BitLen())
}
