// Package authtest holds keys and JWKS servers for the tests of
// authorization, in internal/auth and in the program alike. It is for
// tests only.
package authtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// EdKey returns a new Ed25519 key.
func EdKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// EdJWK returns the public JWK of an Ed25519 key with kid.
func EdJWK(kid string, k ed25519.PrivateKey) map[string]string {
	return map[string]string{"kty": "OKP", "crv": "Ed25519", "kid": kid,
		"x": base64.RawURLEncoding.EncodeToString(k.Public().(ed25519.PublicKey))}
}

// A HangingJWKS is a JWKS server whose first fetch answers at once, and
// every later one hangs until Release, then answers with more keys: a
// JWKS server that hangs on the fetch for a kid it is about to publish.
type HangingJWKS struct {
	// URL is the server's URL.
	URL string

	fetches atomic.Int64
	release chan struct{}
	once    sync.Once
}

// NewHangingJWKS starts a HangingJWKS, closed at the end of t, whose
// first fetch answers first, and every later one first and later.
func NewHangingJWKS(t testing.TB, first, later []map[string]string) *HangingJWKS {
	j := &HangingJWKS{release: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keys := first
		if j.fetches.Add(1) > 1 {
			select {
			case <-j.release:
			case <-r.Context().Done():
				return
			}
			keys = append(append([]map[string]string(nil), first...), later...)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(j.Release) // before Close, which waits for the hanging fetches
	j.URL = srv.URL
	return j
}

// Fetches returns the number of fetches begun.
func (j *HangingJWKS) Fetches() int64 { return j.fetches.Load() }

// Release ends the hanging fetches, and makes the later ones answer at
// once. It may be called more than once.
func (j *HangingJWKS) Release() { j.once.Do(func() { close(j.release) }) }
