package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// testSecret is the HMAC secret of the tests.
var testSecret = []byte("0123456789abcdef0123456789abcdef")

// writeSecret writes testSecret to a file, with a newline as echo would.
func writeSecret(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, append(testSecret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// signToken returns an HS256 token for routes, expiring at exp (none if
// zero).
func signToken(t *testing.T, exp time.Time, routes ...string) string {
	t.Helper()
	c := jwt.MapClaims{"sub": "test", "routes": routes}
	if !exp.IsZero() {
		c["exp"] = exp.Unix()
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// getWith does a GET of path with header and returns the status, the
// headers and at most 1 KB of the body; a stream is not waited for.
func (p *proc) getWith(path string, header http.Header) (int, http.Header, string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL(path), nil)
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header = header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var body []byte
	if resp.StatusCode != http.StatusOK {
		body, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	}
	return resp.StatusCode, resp.Header, string(body)
}

// With a key flag every route needs a token that names it, but one with
// auth=none; the health checks stay open; a refusal says one word.
func TestAuthStatuses(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	pub, stream := ns.jetStream("ORDERS")
	b := startBridge(t, "-listen", "127.0.0.1:0", "-log-level", "debug", "-jwt-secret-file", writeSecret(t),
		"-admin-listen", "127.0.0.1:0",
		"-route", "/orders="+stream, "-route", "/public="+stream+"?auth=none&start=earliest")
	b.WaitReadyz(200)

	hour := time.Now().Add(time.Hour)
	valid := signToken(t, hour, "/orders")
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	for _, tc := range []struct {
		name   string
		path   string
		header http.Header
		status int
		body   string
	}{
		{"no-token", "/orders", nil, 401, "unauthorized\n"},
		{"malformed", "/orders", bearer("abc"), 401, "unauthorized\n"},
		{"expired", "/orders", bearer(signToken(t, time.Now().Add(-time.Minute), "/orders")), 401, "unauthorized\n"},
		{"other-route", "/orders", bearer(signToken(t, hour, "/payments")), 403, "forbidden\n"},
		{"query", "/orders?access_token=" + signToken(t, hour, "/payments"), nil, 403, "forbidden\n"},
		{"cookie", "/orders", http.Header{"Cookie": {"esbridge_token=" + valid}}, 200, ""},
		{"header", "/orders", bearer(valid), 200, ""},
		{"all-routes", "/orders", bearer(signToken(t, hour, "*")), 200, ""},
		{"public", "/public", nil, 200, ""},
		{"healthz", "/healthz", nil, 200, ""},
		{"readyz", "/readyz", nil, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, h, body := b.getWith(tc.path, tc.header)
			if code != tc.status || body != tc.body {
				t.Errorf("GET %s: %d %q, want %d %q", tc.path, code, body, tc.status, tc.body)
			}
			if code == 401 && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("GET %s: 401 with WWW-Authenticate %q, want Bearer", tc.path, h.Get("WWW-Authenticate"))
			}
		})
	}
	// Each 401 and 403 above is counted.
	b.waitMetric(`esbridge_connections_refused_total{reason="auth"}`, "5", equals(5))
	// The reasons are in the debug log, the tokens are not.
	b.WaitLog(`reason="token expired (header)"`, 1)
	if strings.Contains(b.Output(), valid[:20]) {
		t.Errorf("the log holds a token")
	}

	pub.publish("m1", "m2")
	p := connect(t, b.URL("/public"), "")
	p.expectData("m1", "m2") // the bridge has read them: a new client starts after them
	c := connectWith(t, b.URL("/orders?access_token="+valid), "", nil)
	c.syncLive(pub.publish)
	pub.publish("m3")
	c.expectData("m3")
}

// At the token's expiry the stream ends cleanly, after what was sent; the
// client that comes back with its last ID and the expired token gets 401,
// and with a fresh token resumes exactly where it was.
func TestAuthExpiry(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	pub, stream := ns.jetStream("ORDERS")
	b := startBridge(t, "-listen", "127.0.0.1:0", "-jwt-secret-file", writeSecret(t), "-jwt-cookie", "tk",
		"-route", "/orders="+stream)
	b.WaitReadyz(200)

	exp := time.Now().Add(5 * time.Second).Truncate(time.Second)
	cookie := func(tok string) http.Header { return http.Header{"Cookie": {"tk=" + tok}} }
	old := signToken(t, exp, "/orders")
	c := connectWith(t, b.URL("/orders"), "", cookie(old))
	c.syncLive(pub.publish)
	pub.publish(seq("m", 1, 3)...)
	c.expectData(seq("m", 1, 3)...)
	if rest := c.expectEnd(); len(rest) > 0 {
		t.Fatalf("after the last message the stream sent %v", rest)
	}
	if now := time.Now(); now.Before(exp) {
		t.Errorf("the stream ended at %v, before the token's expiry %v", now, exp)
	}
	pub.publish(seq("m", 4, 6)...)

	if code, _, _ := b.getWith("/orders", http.Header{"Cookie": {"tk=" + old}, "Last-Event-ID": {c.lastEventID()}}); code != 401 {
		t.Errorf("back with the expired token: %d, want 401", code)
	}
	fresh := signToken(t, time.Now().Add(time.Hour), "/orders")
	c2 := connectWith(t, b.URL("/orders"), c.lastEventID(), cookie(fresh))
	c2.expectData(seq("m", 4, 6)...)
	c2.expectOnly("end", pub.publish)
}

// Bad authorization flags stop esbridge with status 2 and a line that
// names the flag.
func TestBadAuthFlags(t *testing.T) {
	t.Parallel()
	valid := "/a=jetstream://127.0.0.1:" + freePort(t) + "/S"
	short := filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(short, []byte("too short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		flag string
	}{
		{"missing-secret", []string{"-route", valid, "-jwt-secret-file", "/nonexistent/secret"}, "-jwt-secret-file"},
		{"short-secret", []string{"-route", valid, "-jwt-secret-file", short}, "-jwt-secret-file"},
		{"secret-as-public-key", []string{"-route", valid, "-jwt-public-key-file", short}, "-jwt-public-key-file"},
		{"jwks-not-http", []string{"-route", valid, "-jwt-jwks-url", "file:///etc/jwks.json"}, "-jwt-jwks-url"},
		{"issuer-without-key", []string{"-route", valid, "-jwt-issuer", "https://issuer"}, "-jwt-issuer"},
		{"audience-without-key", []string{"-route", valid, "-jwt-audience", "esbridge"}, "-jwt-audience"},
		{"bad-cookie", []string{"-route", valid, "-jwt-cookie", "a b"}, "-jwt-cookie"},
		{"negative-leeway", []string{"-route", valid, "-jwt-secret-file", short, "-jwt-leeway", "-1s"}, "-jwt-leeway"},
		{"leeway-not-a-duration", []string{"-route", valid, "-jwt-leeway", "5"}, "-jwt-leeway"},
		{"allow-no-exp-without-key", []string{"-route", valid, "-jwt-allow-no-exp"}, "-jwt-allow-no-exp"},
		{"auth-not-none", []string{"-route", valid + "?auth=jwt"}, "-route"},
	}
	bin := binary(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startProc(t, bin, tc.args...)
			code := p.Wait(waitFor)
			stderr := p.Output()
			if lines := scanLines(stderr); code != 2 || len(lines) != 1 || !strings.Contains(stderr, tc.flag) {
				t.Errorf("exit status %d and stderr %q, want 2 and one line naming %s", code, stderr, tc.flag)
			}
			if strings.Contains(stderr, "too short") {
				t.Errorf("the message quotes the secret: %q", stderr)
			}
		})
	}
}

// A token without exp is refused (401, the reason in the debug log) unless
// -jwt-allow-no-exp is given; then its stream is served.
func TestTokenWithoutExp(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	pub, stream := ns.jetStream("NOEXP")
	secret := writeSecret(t)
	strict := startBridge(t, "-listen", "127.0.0.1:0", "-log-level", "debug", "-jwt-secret-file", secret, "-route", "/orders="+stream)
	allowing := startBridge(t, "-listen", "127.0.0.1:0", "-jwt-secret-file", secret, "-jwt-allow-no-exp", "-route", "/orders="+stream)
	strict.WaitReadyz(200)
	allowing.WaitReadyz(200)

	forever := signToken(t, time.Time{}, "/orders")
	bearer := http.Header{"Authorization": {"Bearer " + forever}}
	if code, _, body := strict.getWith("/orders", bearer); code != 401 || body != "unauthorized\n" {
		t.Errorf("a token without exp: %d %q, want 401 %q", code, body, "unauthorized\n")
	}
	strict.WaitLog(`reason="token without exp (header)"`, 1)
	if code, _, body := strict.getWith("/orders", http.Header{"Authorization": {"Bearer " + signToken(t, time.Now().Add(time.Hour), "/orders")}}); code != 200 {
		t.Errorf("a token with exp: %d %q, want 200", code, body)
	}

	c := connectWith(t, allowing.URL("/orders"), "", bearer)
	c.syncLive(pub.publish)
	pub.publish("m1")
	c.expectData("m1")
}

// -jwt-leeway allows that much clock skew to exp and nbf, 5 s by default,
// and the stream of a token ends at its exp plus the leeway, not before.
func TestLeeway(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	pub, stream := ns.jetStream("LEEWAY")
	secret := writeSecret(t)
	b := startBridge(t, "-listen", "127.0.0.1:0", "-jwt-secret-file", secret, "-jwt-leeway", "3s", "-route", "/orders="+stream)
	byDefault := startBridge(t, "-listen", "127.0.0.1:0", "-jwt-secret-file", secret, "-route", "/orders="+stream)
	b.WaitReadyz(200)
	byDefault.WaitReadyz(200)

	// JWT times are whole seconds: exp and nbf are cut to the second
	// before now plus the offset.
	withTimes := func(exp, nbf time.Duration) http.Header {
		c := jwt.MapClaims{"routes": []string{"/orders"}, "exp": time.Now().Add(exp).Unix()}
		if nbf != 0 {
			c["nbf"] = time.Now().Add(nbf).Unix()
		}
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(testSecret)
		if err != nil {
			t.Fatal(err)
		}
		return http.Header{"Authorization": {"Bearer " + s}}
	}
	for _, tc := range []struct {
		name     string
		b        *proc
		exp, nbf time.Duration
		status   int
	}{
		{"expired-within-leeway", b, -time.Second, 0, 200},
		{"expired-past-leeway", b, -5 * time.Second, 0, 401},
		{"not-yet-valid-within-leeway", b, time.Hour, time.Second, 200},
		{"not-yet-valid-past-leeway", b, time.Hour, 5 * time.Second, 401},
		{"expired-within-default-leeway", byDefault, -3 * time.Second, 0, 200},
		{"expired-past-default-leeway", byDefault, -7 * time.Second, 0, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, _, body := tc.b.getWith("/orders", withTimes(tc.exp, tc.nbf)); code != tc.status {
				t.Errorf("%d %q, want %d", code, body, tc.status)
			}
		})
	}

	exp := time.Now().Add(2 * time.Second).Truncate(time.Second)
	c := connectWith(t, b.URL("/orders"), "", http.Header{"Authorization": {"Bearer " + signToken(t, exp, "/orders")}})
	c.syncLive(pub.publish)
	pub.publish("m1")
	c.expectData("m1")
	if rest := c.expectEnd(); len(rest) > 0 {
		t.Fatalf("after the last message the stream sent %v", rest)
	}
	if end, want := time.Now(), exp.Add(3*time.Second); end.Before(want) {
		t.Errorf("the stream ended at %v, before the token's exp plus the leeway, %v", end, want)
	}
}
