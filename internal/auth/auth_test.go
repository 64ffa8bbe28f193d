package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// testKeys are the keys of the tests, made once.
type testKeys struct {
	secret  []byte
	rsa     *rsa.PrivateKey
	rsaPEM  []byte // the PKIX PEM of rsa's public key
	ec      *ecdsa.PrivateKey
	ed      ed25519.PrivateKey
	other   []byte // a secret no Authorizer knows
	otherEd ed25519.PrivateKey
}

var keys = sync.OnceValue(func() testKeys {
	var k testKeys
	var err error
	k.secret = []byte("0123456789abcdef0123456789abcdef")
	k.other = []byte("fedcba9876543210fedcba9876543210")
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	if err != nil {
		panic(err)
	}
	k.rsaPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		panic(err)
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		panic(err)
	}
	if _, k.otherEd, err = ed25519.GenerateKey(rand.Reader); err != nil {
		panic(err)
	}
	return k
})

// now is the tests' clock.
var now = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// tok describes a token to sign.
type tok struct {
	method jwt.SigningMethod
	key    any
	kid    string
	claims jwt.MapClaims
}

// sign returns the signed token.
func (tk tok) sign(t testing.TB) string {
	t.Helper()
	jt := jwt.NewWithClaims(tk.method, tk.claims)
	if tk.kid != "" {
		jt.Header["kid"] = tk.kid
	}
	s, err := jt.SignedString(tk.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// mkClaims returns valid claims for the routes, expiring in an hour, with
// the given changes (a nil value deletes a claim).
func mkClaims(routes any, changes ...any) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "page", "iss": "https://issuer.test", "aud": "esbridge",
		"exp": now.Add(time.Hour).Unix(), "iat": now.Add(-time.Minute).Unix(), "routes": routes}
	for i := 0; i+1 < len(changes); i += 2 {
		name := changes[i].(string)
		if changes[i+1] == nil {
			delete(c, name)
		} else {
			c[name] = changes[i+1]
		}
	}
	return c
}

// newAuthorizer returns an Authorizer with the tests' clock, closed at
// cleanup.
func newAuthorizer(t testing.TB, cfg Config) *Authorizer {
	t.Helper()
	cfg.now = func() time.Time { return now }
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

// bearer returns a request for path with the token in the Authorization
// header.
func bearer(path, token string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	return r
}

func TestAuthorize(t *testing.T) {
	k := keys()
	a := newAuthorizer(t, Config{
		Secrets:    [][]byte{k.secret},
		PublicKeys: []crypto.PublicKey{&k.rsa.PublicKey, &k.ec.PublicKey, k.ed.Public()},
		Issuer:     "https://issuer.test",
		Audience:   "esbridge",
	})
	hs := func(c jwt.MapClaims) tok { return tok{jwt.SigningMethodHS256, k.secret, "", c} }
	orders := []string{"/orders"}
	cases := []struct {
		name   string
		token  tok
		raw    string // instead of token
		status int
	}{
		{"HS256", hs(mkClaims(orders)), "", 200},
		{"HS384", tok{jwt.SigningMethodHS384, k.secret, "", mkClaims(orders)}, "", 200},
		{"HS512", tok{jwt.SigningMethodHS512, k.secret, "", mkClaims(orders)}, "", 200},
		{"RS256", tok{jwt.SigningMethodRS256, k.rsa, "", mkClaims(orders)}, "", 200},
		{"PS512", tok{jwt.SigningMethodPS512, k.rsa, "", mkClaims(orders)}, "", 200},
		{"ES256", tok{jwt.SigningMethodES256, k.ec, "", mkClaims(orders)}, "", 200},
		{"EdDSA", tok{jwt.SigningMethodEdDSA, k.ed, "", mkClaims(orders)}, "", 200},
		{"all-routes", hs(mkClaims([]string{"/other", "*"})), "", 200},
		{"routes-as-a-string", hs(mkClaims("/orders")), "", 200},
		{"star-as-a-string", hs(mkClaims("*")), "", 200},

		{"other-route", hs(mkClaims([]string{"/payments"})), "", 403},
		{"route-prefix", hs(mkClaims([]string{"/order"})), "", 403},
		{"no-routes", hs(mkClaims(orders, "routes", nil)), "", 403},
		{"empty-routes", hs(mkClaims([]string{})), "", 403},

		{"no-token", tok{}, "", 401},
		{"malformed", tok{}, "not.a.token", 401},
		{"garbage", tok{}, "%%%%", 401},
		{"too-long", tok{}, strings.Repeat("a", MaxTokenBytes+1), 401},
		{"routes-not-strings", hs(mkClaims(42)), "", 401},
		{"no-exp", hs(mkClaims(orders, "exp", nil)), "", 401},
		{"no-exp-other-route", hs(mkClaims([]string{"/payments"}, "exp", nil)), "", 401},
		{"expired", hs(mkClaims(orders, "exp", now.Add(-time.Second).Unix())), "", 401},
		{"not-yet-valid", hs(mkClaims(orders, "nbf", now.Add(time.Minute).Unix())), "", 401},
		{"wrong-issuer", hs(mkClaims(orders, "iss", "https://evil.test")), "", 401},
		{"no-issuer", hs(mkClaims(orders, "iss", nil)), "", 401},
		{"wrong-audience", hs(mkClaims(orders, "aud", "other")), "", 401},
		{"audience-among-others", hs(mkClaims(orders, "aud", []string{"x", "esbridge"})), "", 200},
		{"no-audience", hs(mkClaims(orders, "aud", nil)), "", 401},
		{"other-secret", tok{jwt.SigningMethodHS256, k.other, "", mkClaims(orders)}, "", 401},
		{"other-ed25519-key", tok{jwt.SigningMethodEdDSA, k.otherEd, "", mkClaims(orders)}, "", 401},
		// The classic confusion: an HMAC token whose secret is the public
		// key's PEM, which a verifier might take as the HMAC key.
		{"HS256-with-the-public-key", tok{jwt.SigningMethodHS256, k.rsaPEM, "", mkClaims(orders)}, "", 401},
		{"alg-none", tok{jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", mkClaims(orders)}, "", 401},
		{"alg-none-no-signature", tok{}, noneToken(t, mkClaims(orders)), 401},
		{"tampered-claims", tok{}, tamper(t, hs(mkClaims([]string{"/payments"})).sign(t)), 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			token := tc.raw
			if tc.token.method != nil {
				token = tc.token.sign(t)
			}
			d := a.Authorize(context.Background(), bearer("/orders", token), "/orders")
			if d.Status != tc.status {
				t.Fatalf("status %d (%s), want %d", d.Status, d.Reason, tc.status)
			}
			if d.Status != 200 && (d.Reason == "" || token != "" && strings.Contains(d.Reason, token)) {
				t.Errorf("reason %q: want a few words, without the token", d.Reason)
			}
			if exp, ok := tc.token.claims["exp"].(int64); ok && d.Status == 200 && !d.Expires.Equal(time.Unix(exp, 0)) {
				t.Errorf("Expires %v, want %v", d.Expires, time.Unix(exp, 0))
			}
		})
	}
}

// noneToken returns an unsigned token with alg none.
func noneToken(t *testing.T, c jwt.MapClaims) string {
	s, err := jwt.NewWithClaims(jwt.SigningMethodNone, c).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tamper returns token with its claims replaced by claims for every route,
// its signature kept.
func tamper(t *testing.T, token string) string {
	parts := strings.Split(token, ".")
	other := noneToken(t, mkClaims("*"))
	parts[1] = strings.Split(other, ".")[1]
	return strings.Join(parts, ".")
}

// An Authorizer with public keys only refuses every HMAC token, and one
// with a secret only every token of a public key algorithm.
func TestAlgorithmPinned(t *testing.T) {
	k := keys()
	rsaOnly := newAuthorizer(t, Config{PublicKeys: []crypto.PublicKey{&k.rsa.PublicKey}})
	secretOnly := newAuthorizer(t, Config{Secrets: [][]byte{k.secret}})
	for _, tc := range []struct {
		a     *Authorizer
		token tok
	}{
		{rsaOnly, tok{jwt.SigningMethodHS256, k.rsaPEM, "", mkClaims("*")}},
		{rsaOnly, tok{jwt.SigningMethodHS256, x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey), "", mkClaims("*")}},
		{rsaOnly, tok{jwt.SigningMethodES256, k.ec, "", mkClaims("*")}},
		{secretOnly, tok{jwt.SigningMethodRS256, k.rsa, "", mkClaims("*")}},
		{secretOnly, tok{jwt.SigningMethodEdDSA, k.ed, "", mkClaims("*")}},
	} {
		if d := tc.a.Authorize(context.Background(), bearer("/x", tc.token.sign(t)), "/x"); d.Status != 401 {
			t.Errorf("%s token: status %d, want 401", tc.token.method.Alg(), d.Status)
		}
	}
	ok := tok{jwt.SigningMethodRS384, k.rsa, "", mkClaims("*")}
	if d := rsaOnly.Authorize(context.Background(), bearer("/x", ok.sign(t)), "/x"); d.Status != 200 {
		t.Errorf("RS384 token: status %d (%s), want 200", d.Status, d.Reason)
	}
}

// The token is taken from the Authorization header, else the cookie, else
// the query; a bad token where one is found is not made up for by another.
func TestTokenPrecedence(t *testing.T) {
	k := keys()
	a := newAuthorizer(t, Config{Secrets: [][]byte{k.secret}, Cookie: "tk"})
	forRoute := func(route string) string {
		return tok{jwt.SigningMethodHS256, k.secret, "", mkClaims([]string{route})}.sign(t)
	}
	header, cookie, query := forRoute("/header"), forRoute("/cookie"), forRoute("/query")
	req := func(path, authz, cookieValue, queryValue string) *http.Request {
		u := path
		if queryValue != "" {
			u += "?access_token=" + url.QueryEscape(queryValue)
		}
		r := httptest.NewRequest(http.MethodGet, u, nil)
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		if cookieValue != "" {
			r.AddCookie(&http.Cookie{Name: "tk", Value: cookieValue})
		}
		return r
	}
	cases := []struct {
		name        string
		authz, c, q string
		path        string
		status      int
	}{
		{"header-wins", "Bearer " + header, cookie, query, "/header", 200},
		{"header-wins-not-cookie", "Bearer " + header, cookie, query, "/cookie", 403},
		{"header-wins-not-query", "Bearer " + header, cookie, query, "/query", 403},
		{"scheme-any-case", "bearer " + header, "", "", "/header", 200},
		{"cookie-then", "", cookie, query, "/cookie", 200},
		{"cookie-wins-not-query", "", cookie, query, "/query", 403},
		{"query-last", "", "", query, "/query", 200},
		{"basic-is-no-token", "Basic dXNlcjpwYXNz", cookie, "", "/cookie", 200},
		{"bad-header-no-fallback", "Bearer x.y.z", cookie, query, "/cookie", 401},
		{"bad-cookie-no-fallback", "", "x.y.z", query, "/query", 401},
		{"other-cookie-name", "", "", "", "/cookie", 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := req(tc.path, tc.authz, tc.c, tc.q)
			if tc.name == "other-cookie-name" {
				r.AddCookie(&http.Cookie{Name: DefaultCookie, Value: cookie})
			}
			if d := a.Authorize(context.Background(), r, tc.path); d.Status != tc.status {
				t.Errorf("status %d (%s), want %d", d.Status, d.Reason, tc.status)
			}
		})
	}
}

// The handler answers 401 with WWW-Authenticate and 403 with one word, lets
// other paths through, tells OnRefused, and gives an authorized stream a
// context that ends at the token's expiry.
func TestHandler(t *testing.T) {
	k := keys()
	var refused atomic.Int64
	a, err := New(Config{Secrets: [][]byte{k.secret}, OnRefused: func(reason string) {
		if reason == "auth" {
			refused.Add(1)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	var deadline time.Time
	var hasDeadline bool
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		deadline, hasDeadline = r.Context().Deadline()
		w.Write([]byte("stream"))
	})
	h := a.Handler(next, []string{"/orders", "/payments"})
	valid := tok{jwt.SigningMethodHS256, k.secret, "", jwt.MapClaims{"exp": exp.Unix(), "routes": []string{"/orders"}}}.sign(t)

	for _, tc := range []struct {
		path, token string
		status      int
		body        string
	}{
		{"/orders", "", 401, "unauthorized\n"},
		{"/orders", "x", 401, "unauthorized\n"},
		{"/payments", valid, 403, "forbidden\n"},
		{"/orders", valid, 200, "stream"},
		{"/healthz", "", 200, "stream"},
		{"/orders/", "", 200, "stream"}, // not a route: the bridge answers 404
	} {
		rec := httptest.NewRecorder()
		hasDeadline = false
		h.ServeHTTP(rec, bearer(tc.path, tc.token))
		if rec.Code != tc.status || rec.Body.String() != tc.body {
			t.Errorf("%s: %d %q, want %d %q", tc.path, rec.Code, rec.Body.String(), tc.status, tc.body)
		}
		if got := rec.Header().Get("WWW-Authenticate"); tc.status == 401 && !strings.HasPrefix(got, "Bearer") {
			t.Errorf("%s: WWW-Authenticate %q, want Bearer", tc.path, got)
		}
		if tc.token == valid && tc.status == 200 && (!hasDeadline || !deadline.Equal(exp)) {
			t.Errorf("%s: the stream's context has deadline %v (%v), want the token's expiry %v", tc.path, deadline, hasDeadline, exp)
		}
	}
	if n := refused.Load(); n != 3 {
		t.Errorf("OnRefused was called %d times, want 3", n)
	}
}

// A token without exp is refused unless AllowNoExpiry; with a Leeway, exp
// and nbf are checked that much later and earlier, and the stream ends at
// exp plus the leeway.
func TestExpiry(t *testing.T) {
	k := keys()
	hs := func(c jwt.MapClaims) string { return tok{jwt.SigningMethodHS256, k.secret, "", c}.sign(t) }
	strict := newAuthorizer(t, Config{Secrets: [][]byte{k.secret}})
	allowing := newAuthorizer(t, Config{Secrets: [][]byte{k.secret}, AllowNoExpiry: true})
	lenient := newAuthorizer(t, Config{Secrets: [][]byte{k.secret}, Leeway: 5 * time.Second})
	at := func(d time.Duration) int64 { return now.Add(d).Unix() }
	cases := []struct {
		name    string
		a       *Authorizer
		token   string
		status  int
		expires time.Time // of a token accepted
		reason  string    // of a token refused, if it matters
	}{
		{"no-exp", strict, hs(mkClaims("*", "exp", nil)), 401, time.Time{}, "token without exp (header)"},
		{"no-exp-allowed", allowing, hs(mkClaims("*", "exp", nil)), 200, time.Time{}, ""},
		{"exp-allowed-too", allowing, hs(mkClaims("*")), 200, now.Add(time.Hour), ""},
		{"no-exp-with-leeway", lenient, hs(mkClaims("*", "exp", nil)), 401, time.Time{}, "token without exp (header)"},
		{"exp", lenient, hs(mkClaims("*")), 200, now.Add(time.Hour + 5*time.Second), ""},
		{"expired-within-leeway", lenient, hs(mkClaims("*", "exp", at(-4*time.Second))), 200, now.Add(time.Second), ""},
		{"expired-past-leeway", lenient, hs(mkClaims("*", "exp", at(-6*time.Second))), 401, time.Time{}, "token expired (header)"},
		{"expired-no-leeway", strict, hs(mkClaims("*", "exp", at(-time.Second))), 401, time.Time{}, "token expired (header)"},
		{"nbf-within-leeway", lenient, hs(mkClaims("*", "nbf", at(4*time.Second))), 200, now.Add(time.Hour + 5*time.Second), ""},
		{"nbf-past-leeway", lenient, hs(mkClaims("*", "nbf", at(6*time.Second))), 401, time.Time{}, "token not valid yet (header)"},
		{"nbf-no-leeway", strict, hs(mkClaims("*", "nbf", at(time.Second))), 401, time.Time{}, "token not valid yet (header)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.a.Authorize(context.Background(), bearer("/x", tc.token), "/x")
			if d.Status != tc.status {
				t.Fatalf("status %d (%s), want %d", d.Status, d.Reason, tc.status)
			}
			if tc.reason != "" && d.Reason != tc.reason {
				t.Errorf("reason %q, want %q", d.Reason, tc.reason)
			}
			if d.Status == 200 && !d.Expires.Equal(tc.expires) {
				t.Errorf("Expires %v, want %v", d.Expires, tc.expires)
			}
		})
	}
}

// The handler ends an authorized stream at the token's exp plus the
// leeway.
func TestHandlerLeeway(t *testing.T) {
	k := keys()
	a, err := New(Config{Secrets: [][]byte{k.secret}, Leeway: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	var deadline time.Time
	h := a.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		deadline, _ = r.Context().Deadline()
	}), []string{"/orders"})
	token := tok{jwt.SigningMethodHS256, k.secret, "", jwt.MapClaims{"exp": exp.Unix(), "routes": "*"}}.sign(t)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, bearer("/orders", token))
	if rec.Code != 200 || !deadline.Equal(exp.Add(3*time.Second)) {
		t.Errorf("status %d, the stream's deadline %v; want 200 and the token's exp plus the leeway, %v", rec.Code, deadline, exp.Add(3*time.Second))
	}
}

func TestNewRefuses(t *testing.T) {
	k := keys()
	for name, cfg := range map[string]Config{
		"no-key":          {},
		"negative-leeway": {Secrets: [][]byte{k.secret}, Leeway: -time.Second},
		"short-secret":    {Secrets: [][]byte{[]byte("short")}},
		"bad-cookie":      {Secrets: [][]byte{k.secret}, Cookie: "a b"},
		"private-key":     {PublicKeys: []crypto.PublicKey{k.rsa}},
		"jwks-no-url":     {JWKSURL: "file:///etc/keys"},
	} {
		if a, err := New(cfg); err == nil {
			a.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestKeyFiles(t *testing.T) {
	k := keys()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pkix := func(pub any) []byte {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	for name, b := range map[string][]byte{
		"rsa.pem":   k.rsaPEM,
		"pkcs1.pem": pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)}),
		"ec.pem":    pkix(&k.ec.PublicKey),
		"ed.pem":    pkix(k.ed.Public()),
	} {
		if _, err := ReadPublicKeyFile(write(name, b)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k.ed)
	for name, b := range map[string][]byte{
		"private.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		"empty.pem":   nil,
		"text.pem":    []byte("hello"),
	} {
		if _, err := ReadPublicKeyFile(write(name, b)); err == nil {
			t.Errorf("%s: read as a public key", name)
		}
	}
	if s, err := ReadSecretFile(write("secret", append(k.secret, '\n'))); err != nil || string(s) != string(k.secret) {
		t.Errorf("secret file: %q, %v; want the secret without its newline", s, err)
	}
	if _, err := ReadSecretFile(write("short", []byte("short\n"))); err == nil || strings.Contains(err.Error(), "short") {
		t.Errorf("short secret: %v; want an error that does not quote it", err)
	}
	if _, err := ReadSecretFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing secret file: no error")
	}
}
