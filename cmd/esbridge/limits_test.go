package main

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/esbridge/esbridge/internal/poll"
)

// refusedRE is the whole body of a stream refused over a limit.
var refusedRE = regexp.MustCompile(`^retry: (\d+)\n\n$`)

// refused waits for c's first bytes and reports whether it was refused:
// a retry line of 5 to 15 s, and the end of the stream. A stream that is
// served begins with esource's retry line of 3 s instead, and goes on.
func (c *sseClient) refused() bool {
	c.t.Helper()
	if !poll.Wait(waitFor, func() bool { return strings.HasSuffix(c.body(), "\n\n") }) {
		c.t.Fatalf("%s: no retry line within %v; received %q", c.url, waitFor, c.body())
	}
	if strings.HasPrefix(c.body(), "retry: 3000\n") {
		return false
	}
	c.expectEnd()
	m := refusedRE.FindStringSubmatch(c.body())
	if m == nil {
		c.t.Fatalf("%s: body %q, want a stream, or a retry line alone", c.url, c.body())
	}
	if ms, _ := strconv.Atoi(m[1]); ms < 5000 || ms > 15000 {
		c.t.Errorf("%s: refused with retry %d ms, want 5000 to 15000", c.url, ms)
	}
	return true
}

func xff(addr string) http.Header { return http.Header{"X-Forwarded-For": {addr}} }

// -max-clients and -max-clients-per-ip: a stream over a limit gets 200, a
// retry line and its end, so that the browser comes back later; a stream
// that ends makes room for another. The client address comes from
// X-Forwarded-For only for a -trusted-proxy; health checks are not
// counted.
func TestMaxClients(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	pub, url := ns.jetStream("LIMITS")
	// Over HTTP/1.1 the bridge learns that a client went within seconds
	// (it peeks at the connection every 5 s), long before its next
	// heartbeat: 25 s here.
	b := startBridge(t, "-listen", "127.0.0.1:0", "-route", "/s="+url, "-heartbeat", "25s",
		"-max-clients", "3", "-max-clients-per-ip", "2", "-trusted-proxy", "127.0.0.1", "-admin-listen", "127.0.0.1:0")
	b.WaitReadyz(http.StatusOK)
	hc := http.DefaultClient
	open := func(addr string) *sseClient {
		t.Helper()
		c := openStream(t, hc, b.URL("/s"), xff(addr))
		if c.refused() {
			t.Fatalf("the stream of %s was refused:\n%s", addr, b.Output())
		}
		return c
	}
	expectRefused := func(addr string) {
		t.Helper()
		if !openStream(t, hc, b.URL("/s"), xff(addr)).refused() {
			t.Fatalf("the stream of %s was served, want it refused", addr)
		}
	}

	a1, a2 := open("192.0.2.1"), open("192.0.2.1")
	expectRefused("192.0.2.1") // -max-clients-per-ip
	c1 := open("192.0.2.2")
	expectRefused("192.0.2.3") // -max-clients
	if code, _, _ := b.Get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz answers %d with every place taken, want 200", code)
	}
	b.waitMetric(`esbridge_connections_refused_total{reason="limit"}`, "2", equals(2))
	// The streams served are live: each is registered once it has its
	// first line.
	pub.publish("m1")
	for _, c := range []*sseClient{a1, a2, c1} {
		c.expectData("m1")
	}

	// Once a stream ends, its place goes to the next, here 192.0.2.3.
	a1.close()
	admitted := func(addr string) *sseClient {
		t.Helper()
		var c *sseClient
		if !poll.Wait(waitFor, func() bool {
			c = openStream(t, hc, b.URL("/s"), xff(addr))
			return !c.refused()
		}) {
			t.Fatalf("%s is still refused %v after a stream ended", addr, waitFor)
		}
		return c
	}
	d1 := admitted("192.0.2.3")
	expectRefused("192.0.2.4")
	pub.publish("m2")
	for _, c := range []*sseClient{a2, c1, d1} {
		c.expectData("m2")
	}
}

// Without -trusted-proxy, X-Forwarded-For is the client's own word and is
// not believed: two streams from 127.0.0.1 are two of one address.
func TestMaxClientsPerIPUntrusted(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	_, url := ns.jetStream("UNTRUSTED")
	b := startBridge(t, "-listen", "127.0.0.1:0", "-route", "/s="+url, "-max-clients-per-ip", "1",
		"-trusted-proxy", "10.0.0.0/8")
	b.WaitReadyz(http.StatusOK)
	if openStream(t, http.DefaultClient, b.URL("/s"), xff("192.0.2.1")).refused() {
		t.Fatal("the first stream was refused")
	}
	if !openStream(t, http.DefaultClient, b.URL("/s"), xff("192.0.2.2")).refused() {
		t.Fatal("a second stream from 127.0.0.1 was served with a forged X-Forwarded-For")
	}
}

// Bad TLS and limit flags stop the program with one line naming the flag.
func TestBadServerFlags(t *testing.T) {
	t.Parallel()
	valid := "/a=jetstream://127.0.0.1:" + freePort(t) + "/S"
	dir := t.TempDir()
	cases := []struct {
		name string
		args []string
		flag string
	}{
		{"cert-without-key", []string{"-tls-cert", dir + "/c.pem"}, "-tls-key"},
		{"key-without-cert", []string{"-tls-key", dir + "/k.pem"}, "-tls-cert"},
		{"missing-cert", []string{"-tls-cert", dir + "/c.pem", "-tls-key", dir + "/k.pem"}, "-tls-cert"},
		{"negative-max-clients", []string{"-max-clients", "-1"}, "-max-clients"},
		{"max-clients-not-a-number", []string{"-max-clients", "many"}, "-max-clients"},
		{"negative-max-clients-per-ip", []string{"-max-clients-per-ip", "-1"}, "-max-clients-per-ip"},
		{"ipv6-prefix-0", []string{"-ipv6-prefix", "0"}, "-ipv6-prefix"},
		{"ipv6-prefix-129", []string{"-ipv6-prefix", "129"}, "-ipv6-prefix"},
		{"ipv6-prefix-not-a-number", []string{"-ipv6-prefix", "/64"}, "-ipv6-prefix"},
		{"bad-trusted-proxy", []string{"-trusted-proxy", "10.0.0.0/33"}, "-trusted-proxy"},
		{"hostname-trusted-proxy", []string{"-trusted-proxy", "proxy.example"}, "-trusted-proxy"},
	}
	bin := binary(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startProc(t, bin, append([]string{"-route", valid}, tc.args...)...)
			code := p.Wait(waitFor)
			lines := scanLines(p.Output())
			if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], "esbridge: ") || !strings.Contains(lines[0], tc.flag) {
				t.Errorf("exit status %d, stderr:\n%s\nwant status 2 and one line naming %s", code, p.Output(), tc.flag)
			}
		})
	}
}
