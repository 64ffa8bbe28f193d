package main

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/esbridge/esbridge/internal/poll"
)

// -max-clients-per-ip counts an IPv6 client by the prefix of its address:
// a /64 by default, or -ipv6-prefix bits. The clients connect from real
// IPv6 addresses, which the test adds to the loopback interface: two of
// one /64 and one of another /64, of a unique local /48 drawn at random.
func TestMaxClientsPerIPv6Prefix(t *testing.T) {
	t.Parallel()
	site := localIPv6Site()
	a1, a2 := site.addr(1, 1), site.addr(1, 2) // one /64
	b1 := site.addr(2, 1)                      // another /64 of the /48
	for _, a := range []netip.Addr{a1, a2, b1} {
		addLoopbackAddr(t, a)
	}

	ns := runNATS(t)
	_, url := ns.jetStream("PERIPV6")
	for _, tc := range []struct {
		name   string
		flags  []string
		group  string // what the second stream from a1 counts as
		served []netip.Addr
	}{
		// a1 and a2 are one client; b1 another.
		{"default-64", nil, site.prefix(1, 64), []netip.Addr{a1, b1}},
		// a1, a2 and b1 are one client.
		{"48", []string{"-ipv6-prefix", "48"}, site.prefix(1, 48), []netip.Addr{a1}},
		// each address is a client.
		{"128", []string{"-ipv6-prefix", "128"}, a1.String() + "/128", []netip.Addr{a1, a2, b1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"-listen", "[::1]:0", "-log-level", "debug", "-route", "/s=" + url,
				"-max-clients-per-ip", "1"}, tc.flags...)
			b := startBridge(t, args...)
			b.WaitReadyz(http.StatusOK)
			served := 0
			for _, from := range []netip.Addr{a1, a2, b1, a1} {
				c := openStream(t, httpClientFrom(t, from), b.URL("/s"), nil)
				want := served < len(tc.served) && tc.served[served] == from
				if got := !c.refused(); got != want {
					t.Fatalf("the stream from %s: served %v, want %v", from, got, want)
				}
				if want {
					served++
				}
			}
			if served != len(tc.served) {
				t.Errorf("%d streams served, want %d", served, len(tc.served))
			}
			b.WaitLog("reason=max-clients-per-ip client="+tc.group, 1)
		})
	}
}

// -max-clients-per-ip counts an IPv4 client by its address, whatever
// -ipv6-prefix says: 127.0.0.1 and 127.0.0.2 are two clients.
func TestMaxClientsPerIPv4Address(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	_, url := ns.jetStream("PERIPV4")
	b := startBridge(t, "-listen", "127.0.0.1:0", "-route", "/s="+url, "-max-clients-per-ip", "1", "-ipv6-prefix", "8")
	b.WaitReadyz(http.StatusOK)
	one, two := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	for _, tc := range []struct {
		from   netip.Addr
		served bool
	}{{one, true}, {two, true}, {one, false}, {two, false}} {
		if got := !openStream(t, httpClientFrom(t, tc.from), b.URL("/s"), nil).refused(); got != tc.served {
			t.Fatalf("the stream from %s: served %v, want %v", tc.from, got, tc.served)
		}
	}
}

// httpClientFrom returns an HTTP client whose connections come from the
// local address from.
func httpClientFrom(t *testing.T, from netip.Addr) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: from.AsSlice()}}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// An ipv6Site is a unique local /48 (fd00::/8, RFC 4193) drawn at random,
// so that tests running at once on one machine do not meet.
type ipv6Site [6]byte

func localIPv6Site() ipv6Site {
	var s ipv6Site
	rand.Read(s[1:])
	s[0] = 0xfd
	return s
}

// addr returns the address host of the site's subnet.
func (s ipv6Site) addr(subnet, host uint16) netip.Addr {
	var b [16]byte
	copy(b[:], s[:])
	b[6], b[7] = byte(subnet>>8), byte(subnet)
	b[14], b[15] = byte(host>>8), byte(host)
	return netip.AddrFrom16(b)
}

// prefix returns the prefix of bits bits of the site's subnet, as text.
func (s ipv6Site) prefix(subnet uint16, bits int) string {
	return netip.PrefixFrom(s.addr(subnet, 0), bits).Masked().String()
}

// addLoopbackAddr adds a to the loopback interface until the end of t,
// and waits until it can be bound. It needs root and the ip tool: without
// them t is skipped, but in CI (CI set), where it must run, it fails.
func addLoopbackAddr(t *testing.T, a netip.Addr) {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil || os.Geteuid() != 0 {
		msg := fmt.Sprintf("adding IPv6 addresses to the loopback interface needs root and the ip tool (euid %d, ip: %v)", os.Geteuid(), err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ip := func(args ...string) error {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	cidr := a.String() + "/128"
	if err := ip("-6", "addr", "add", cidr, "dev", "lo", "nodad"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ip("-6", "addr", "del", cidr, "dev", "lo"); err != nil {
			t.Error(err)
		}
	})
	poll.UntilNil(t, waitFor, a.String()+" can be bound", func() error {
		ln, err := net.Listen("tcp", netip.AddrPortFrom(a, 0).String())
		if err == nil {
			ln.Close()
		}
		return err
	})
}
