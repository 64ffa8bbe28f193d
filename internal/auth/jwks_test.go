package auth

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/esbridge/esbridge/internal/auth/authtest"
	"github.com/esbridge/esbridge/internal/poll"
)

// A jwksServer serves a JSON Web Key Set on 127.0.0.1, which the test can
// change, and counts its fetches.
type jwksServer struct {
	*httptest.Server
	fetches atomic.Int64
	mu      sync.Mutex
	keys    []map[string]string
}

func newJWKSServer(t *testing.T, keys ...map[string]string) *jwksServer {
	s := &jwksServer{keys: keys}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) serve(w http.ResponseWriter, _ *http.Request) {
	s.fetches.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"keys": s.keys})
}

// set replaces the keys served.
func (s *jwksServer) set(keys ...map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = keys
}

// octJWK returns a symmetric JWK with kid.
func octJWK(kid string, secret []byte) map[string]string {
	return map[string]string{"kty": "oct", "kid": kid, "k": base64.RawURLEncoding.EncodeToString(secret)}
}

// The key of a token is chosen by its kid; a rotated set is fetched when a
// token names a kid the bridge has not seen, and a key no longer in the
// set no longer verifies; tokens with unknown kids cause at most one fetch
// per JWKSUnknownKID.
func TestJWKSRotation(t *testing.T) {
	a1, b1 := authtest.EdKey(t), authtest.EdKey(t)
	srv := newJWKSServer(t, authtest.EdJWK("a", a1))
	az := newAuthorizer(t, Config{JWKSURL: srv.URL, JWKSUnknownKID: time.Hour})
	check := func(kid string, key ed25519.PrivateKey, want int) {
		t.Helper()
		token := tok{jwt.SigningMethodEdDSA, key, kid, mkClaims("*")}.sign(t)
		if d := az.Authorize(context.Background(), bearer("/x", token), "/x"); d.Status != want {
			t.Errorf("kid %q: status %d (%s), want %d", kid, d.Status, d.Reason, want)
		}
	}
	check("a", a1, 200)
	check("a", b1, 401) // the right kid, another key
	check("", a1, 200)  // no kid: every key of the set is tried
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches of the JWKS, want 1", n)
	}

	srv.set(authtest.EdJWK("b", b1))
	check("b", b1, 200) // an unknown kid: the set is fetched again
	check("a", a1, 401) // a is gone
	check("c", b1, 401)
	check("d", b1, 401)
	if n := srv.fetches.Load(); n != 2 {
		t.Errorf("%d fetches of the JWKS after tokens with three unknown kids, want 2 (one per JWKSUnknownKID)", n)
	}
}

// A symmetric key of a JWKS verifies nothing: a JWKS is public.
func TestJWKSSymmetricKeyRefused(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	srv := newJWKSServer(t, octJWK("s", secret))
	az := newAuthorizer(t, Config{JWKSURL: srv.URL})
	token := tok{jwt.SigningMethodHS256, secret, "s", mkClaims("*")}.sign(t)
	if d := az.Authorize(context.Background(), bearer("/x", token), "/x"); d.Status != 401 {
		t.Errorf("HS256 token of a JWKS oct key: status %d, want 401", d.Status)
	}
}

// A JWKS that is down when the Authorizer starts does not stop it: tokens
// are refused until it is up, then verified.
func TestJWKSDownAtStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	a1 := authtest.EdKey(t)
	az := newAuthorizer(t, Config{JWKSURL: "http://" + addr + "/jwks.json", JWKSUnknownKID: 50 * time.Millisecond})
	token := tok{jwt.SigningMethodEdDSA, a1, "a", mkClaims("*")}.sign(t)
	if d := az.Authorize(context.Background(), bearer("/x", token), "/x"); d.Status != 401 {
		t.Fatalf("JWKS down: status %d, want 401", d.Status)
	}

	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the port of the JWKS was taken meanwhile: %v", err)
	}
	srv := &jwksServer{keys: []map[string]string{authtest.EdJWK("a", a1)}}
	srv.Server = &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(srv.serve)}}
	srv.Start()
	t.Cleanup(srv.Close)
	poll.UntilNil(t, 10*time.Second, "a token is authorized with the JWKS up again", func() error {
		if d := az.Authorize(context.Background(), bearer("/x", token), "/x"); d.Status != 200 {
			return fmt.Errorf("status %d (%s), want 200", d.Status, d.Reason)
		}
		return nil
	})
}

// A request whose kid the JWKS lacks never waits for a fetch that another
// request started: while the JWKS server hangs on the fetch of one such
// request, another is refused at once, and one with a known kid is
// authorized at once. The request that started the fetch gets its answer
// when the fetch ends.
func TestJWKSUnknownKIDWaitsForNoFetchInFlight(t *testing.T) {
	a1, x1 := authtest.EdKey(t), authtest.EdKey(t)
	srv := authtest.NewHangingJWKS(t, []map[string]string{authtest.EdJWK("a", a1)}, []map[string]string{authtest.EdJWK("x", x1)})

	// Fetches for unknown kids may follow each other closely: only the
	// fetch in flight can hold a request back.
	az := newAuthorizer(t, Config{JWKSURL: srv.URL, JWKSUnknownKID: time.Millisecond, JWKSTimeout: time.Minute})
	authorize := func(kid string, key ed25519.PrivateKey) (Decision, time.Duration) {
		token := tok{jwt.SigningMethodEdDSA, key, kid, mkClaims("*")}.sign(t)
		start := time.Now()
		d := az.Authorize(context.Background(), bearer("/x", token), "/x")
		return d, time.Since(start)
	}

	first := make(chan Decision, 1)
	go func() {
		d, _ := authorize("x", x1)
		first <- d
	}()
	poll.Until(t, 10*time.Second, "the JWKS server hangs on the fetch for kid x", func() bool { return srv.Fetches() == 2 })

	const quick = 2 * time.Second // against a fetch that hangs for a minute
	if d, took := authorize("y", x1); d.Status != 401 || took > quick {
		t.Errorf("kid y, unknown, during the fetch for x: status %d (%s) after %v, want 401 at once", d.Status, d.Reason, took)
	}
	if d, took := authorize("a", a1); d.Status != 200 || took > quick {
		t.Errorf("kid a, known, during the fetch for x: status %d (%s) after %v, want 200 at once", d.Status, d.Reason, took)
	}
	if n := srv.Fetches(); n != 2 {
		t.Errorf("%d fetches of the JWKS, want 2: the start, and the one for kid x", n)
	}
	select {
	case d := <-first:
		t.Fatalf("kid x was answered %d (%s) while its fetch hangs", d.Status, d.Reason)
	default:
	}

	srv.Release()
	select {
	case d := <-first:
		if d.Status != 200 {
			t.Errorf("kid x, once its fetch ended with x in the set: status %d (%s), want 200", d.Status, d.Reason)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("kid x got no answer 10 s after its fetch was released")
	}
}
