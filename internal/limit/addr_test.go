package limit

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func TestClientAddr(t *testing.T) {
	t.Parallel()
	trusted := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("2001:db8:1::/48"),
	}
	long := strings.Repeat("10.0.0.1, ", maxHops+5) // all trusted proxies
	cases := []struct {
		name   string
		remote string
		xff    []string
		fwd    []string
		want   string
	}{
		{"direct", "192.0.2.1:5000", nil, nil, "192.0.2.1"},
		{"direct, headers ignored", "192.0.2.1:5000", []string{"198.51.100.7"}, []string{"for=198.51.100.8"}, "192.0.2.1"},
		{"direct IPv6", "[2001:db8::5]:443", nil, nil, "2001:db8::5"},
		{"direct IPv4 over IPv6", "[::ffff:192.0.2.1]:443", nil, nil, "192.0.2.1"},
		{"direct zone dropped", "[fe80::1%eth0]:443", nil, nil, "fe80::1"},
		{"trusted, no header", "10.1.2.3:80", nil, nil, "10.1.2.3"},
		{"trusted, XFF", "10.1.2.3:80", []string{"198.51.100.7"}, nil, "198.51.100.7"},
		{"trusted, XFF rightmost untrusted", "10.1.2.3:80", []string{"203.0.113.9, 198.51.100.7, 10.9.9.9"}, nil, "198.51.100.7"},
		{"trusted, XFF forged on the left", "10.1.2.3:80", []string{"1.2.3.4, 198.51.100.7"}, nil, "198.51.100.7"},
		{"trusted, XFF lines", "10.1.2.3:80", []string{"203.0.113.9", "198.51.100.7, 10.0.0.2"}, nil, "198.51.100.7"},
		{"trusted, XFF with port", "10.1.2.3:80", []string{"198.51.100.7:4711"}, nil, "198.51.100.7"},
		{"trusted, XFF IPv6", "10.1.2.3:80", []string{"2001:db8::7"}, nil, "2001:db8::7"},
		{"trusted, XFF IPv6 bracketed", "10.1.2.3:80", []string{"[2001:db8::7]:4711"}, nil, "2001:db8::7"},
		{"trusted, XFF empty elements", "10.1.2.3:80", []string{"198.51.100.7, ,", ""}, nil, "198.51.100.7"},
		{"trusted, XFF all trusted", "10.1.2.3:80", []string{"10.0.0.9, 10.0.0.8"}, nil, "10.0.0.9"},
		{"trusted, XFF garbage stops at last trusted", "10.1.2.3:80", []string{"198.51.100.7, unknown, 10.0.0.8"}, nil, "10.0.0.8"},
		{"trusted, XFF garbage first", "10.1.2.3:80", []string{"198.51.100.7, nonsense"}, nil, "10.1.2.3"},
		{"trusted, XFF hostname", "10.1.2.3:80", []string{"client.example"}, nil, "10.1.2.3"},
		{"trusted, XFF bad port", "10.1.2.3:80", []string{"198.51.100.7:http"}, nil, "10.1.2.3"},
		{"trusted, XFF too many hops", "10.1.2.3:80", []string{"198.51.100.7, " + long}, nil, "10.0.0.1"},
		{"trusted, XFF too long", "10.1.2.3:80", []string{"198.51.100.7, " + strings.Repeat(" ", maxScan)}, nil, "10.1.2.3"},
		{"trusted, Forwarded", "10.1.2.3:80", nil, []string{"for=198.51.100.7;proto=https"}, "198.51.100.7"},
		{"trusted, Forwarded case", "10.1.2.3:80", nil, []string{"For=198.51.100.7"}, "198.51.100.7"},
		{"trusted, Forwarded quoted port", "10.1.2.3:80", nil, []string{`for="198.51.100.7:4711"`}, "198.51.100.7"},
		{"trusted, Forwarded IPv6", "10.1.2.3:80", nil, []string{`for="[2001:db8::7]:4711"`}, "2001:db8::7"},
		{"trusted, Forwarded chain", "10.1.2.3:80", nil, []string{`for=203.0.113.9, for=198.51.100.7;by=10.0.0.1, for="[2001:db8:1::2]"`}, "198.51.100.7"},
		{"trusted, Forwarded unknown", "10.1.2.3:80", nil, []string{"for=198.51.100.7, for=unknown"}, "10.1.2.3"},
		{"trusted, Forwarded obfuscated", "10.1.2.3:80", nil, []string{"for=_hidden"}, "10.1.2.3"},
		{"trusted, Forwarded no for", "10.1.2.3:80", nil, []string{"for=198.51.100.7, proto=https"}, "10.1.2.3"},
		{"trusted, Forwarded two for", "10.1.2.3:80", nil, []string{"for=198.51.100.7;for=203.0.113.9"}, "10.1.2.3"},
		{"trusted, Forwarded open quote", "10.1.2.3:80", nil, []string{`for="198.51.100.7`}, "10.1.2.3"},
		{"trusted, Forwarded IPv6 unbracketed in quotes", "10.1.2.3:80", nil, []string{`for="2001:db8::7"`}, "2001:db8::7"},
		{"trusted, both agree", "10.1.2.3:80", []string{"198.51.100.7"}, []string{"for=198.51.100.7"}, "198.51.100.7"},
		{"trusted, both disagree", "10.1.2.3:80", []string{"198.51.100.7"}, []string{"for=203.0.113.9"}, "10.1.2.3"},
		{"trusted IPv6 proxy", "[2001:db8:1::9]:80", []string{"198.51.100.7"}, nil, "198.51.100.7"},
		{"trusted, mapped address in XFF", "10.1.2.3:80", []string{"::ffff:198.51.100.7"}, nil, "198.51.100.7"},
		{"trusted, mapped trusted hop in XFF", "10.1.2.3:80", []string{"198.51.100.7, ::ffff:10.0.0.3"}, nil, "198.51.100.7"},
		{"unparseable remote", "@", []string{"198.51.100.7"}, nil, "invalid IP"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			for _, v := range tc.xff {
				h.Add("X-Forwarded-For", v)
			}
			for _, v := range tc.fwd {
				h.Add("Forwarded", v)
			}
			if got := ClientAddr(tc.remote, h, trusted).String(); got != tc.want {
				t.Errorf("ClientAddr(%q, X-Forwarded-For %q, Forwarded %q) = %s, want %s", tc.remote, tc.xff, tc.fwd, got, tc.want)
			}
		})
	}
}

// FuzzClientAddr checks, for any forwarding headers from a trusted proxy,
// that the client address is the connection's or one the headers name,
// and that only the end of a long header is read.
func FuzzClientAddr(f *testing.F) {
	f.Add("198.51.100.7, 10.0.0.8", `for=198.51.100.7;proto=https, for="[2001:db8::7]:4711"`)
	f.Add("unknown", "for=_hidden")
	f.Add("[2001:db8::7]:1", `for="198.51.100.7:4711"`)
	f.Add("::ffff:10.0.0.1", "")
	f.Add("", "For=203.0.113.9;by=10.0.0.1")
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	remote := netip.MustParseAddr("10.1.2.3")
	f.Fuzz(func(t *testing.T, xff, fwd string) {
		h := http.Header{}
		if xff != "" {
			h.Set("X-Forwarded-For", xff)
		}
		if fwd != "" {
			h.Set("Forwarded", fwd)
		}
		got := ClientAddr(remote.String()+":80", h, trusted)
		if !got.IsValid() || got.Zone() != "" || got.Is4In6() {
			t.Fatalf("ClientAddr = %v, want a valid address without zone, unmapped", got)
		}
		if got != remote && !mentions(xff, got) && !mentions(fwd, got) {
			t.Fatalf("ClientAddr = %v, which neither header names (X-Forwarded-For %q, Forwarded %q)", got, xff, fwd)
		}
		// Only the last maxScan bytes of a header can matter.
		h2, longer := http.Header{}, false
		for name, v := range map[string]string{"X-Forwarded-For": xff, "Forwarded": fwd} {
			switch {
			case len(v) > maxScan:
				h2.Set(name, "198.51.100.1, for=198.51.100.1,"+v)
				longer = true
			case v != "":
				h2.Set(name, v)
			}
		}
		if got2 := ClientAddr(remote.String()+":80", h2, trusted); longer && got2 != got {
			t.Fatalf("a hop beyond the last %d bytes changed the client from %v to %v", maxScan, got, got2)
		}
	})
}

// mentions reports whether some token of the header s parses as a.
func mentions(s string, a netip.Addr) bool {
	for _, tok := range strings.FieldsFunc(s, func(r rune) bool { return strings.ContainsRune(",; \t=\"[]", r) }) {
		if n, ok := parseNode(tok); ok && n == a {
			return true
		}
		if ip, _, ok := strings.Cut(tok, "%"); ok {
			if n, ok := parseNode(ip); ok && n == a {
				return true
			}
		}
	}
	return false
}

func TestClientGroup(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		addr string
		bits int
		want string
	}{
		{"192.0.2.1", 64, "192.0.2.1/32"},
		{"192.0.2.1", 8, "192.0.2.1/32"},
		{"::ffff:192.0.2.1", 64, "192.0.2.1/32"},
		{"2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:2::", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", 64, "2001:db8:1:3::/64"},
		{"2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48"},
		{"2001:db8:1:2:3:4:5:6", 56, "2001:db8:1::/56"},
		{"2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6/128"},
		{"2001:db8:1:2:3:4:5:6", 1, "::/1"},
		{"fe80::1%eth0", 64, "fe80::/64"},
		{"::1", 64, "::/64"},
	} {
		a := netip.MustParseAddr(tc.addr)
		if got := clientGroup(a, tc.bits).String(); got != tc.want {
			t.Errorf("clientGroup(%s, %d) = %s, want %s", tc.addr, tc.bits, got, tc.want)
		}
	}
	if got := clientGroup(netip.Addr{}, 64); got.IsValid() {
		t.Errorf("clientGroup of the zero address = %v, want the zero prefix", got)
	}
}
