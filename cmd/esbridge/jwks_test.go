package main

import (
	"crypto/ed25519"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/esbridge/esbridge/internal/auth/authtest"
	"github.com/esbridge/esbridge/internal/poll"
)

// A request whose kid the JWKS lacks never waits for a fetch of the JWKS
// in flight: while the JWKS server hangs on the fetch that one such
// request started, another is refused (401) at once, and a token with a
// known kid opens its stream at once. The request that started the fetch
// is answered when the fetch ends.
func TestJWKSUnknownKidDuringHangingFetch(t *testing.T) {
	t.Parallel()
	known, fresh := authtest.EdKey(t), authtest.EdKey(t)
	jwks := authtest.NewHangingJWKS(t, []map[string]string{authtest.EdJWK("known", known)}, []map[string]string{authtest.EdJWK("fresh", fresh)})

	ns := runNATS(t)
	pub, stream := ns.jetStream("KIDS")
	b := startBridge(t, "-listen", "127.0.0.1:0", "-jwt-jwks-url", jwks.URL+"/jwks.json", "-route", "/orders="+stream)
	b.WaitReadyz(200)
	if n := jwks.Fetches(); n != 1 {
		t.Fatalf("%d fetches of the JWKS at startup, want 1", n)
	}
	bearer := func(kid string, key ed25519.PrivateKey) http.Header {
		tk := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"routes": "*", "exp": time.Now().Add(time.Hour).Unix()})
		tk.Header["kid"] = kid
		s, err := tk.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return http.Header{"Authorization": {"Bearer " + s}}
	}

	first := make(chan int, 1)
	go func() {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, b.URL("/orders"), nil)
		req.Header = bearer("fresh", fresh)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	poll.Until(t, waitFor, "the JWKS server hangs on the fetch for the kid fresh", func() bool { return jwks.Fetches() == 2 })

	const quick = 2 * time.Second // esbridge gives a fetch 10 s
	start := time.Now()
	if code, _, _ := b.getWith("/orders", bearer("other", fresh)); code != 401 || time.Since(start) > quick {
		t.Errorf("an unknown kid during the fetch: %d after %v, want 401 at once", code, time.Since(start))
	}
	start = time.Now()
	c := connectWith(t, b.URL("/orders"), "", bearer("known", known))
	if took := time.Since(start); took > quick {
		t.Errorf("the known kid's stream opened after %v during the fetch, want at once", took)
	}
	if n := jwks.Fetches(); n != 2 {
		t.Errorf("%d fetches of the JWKS, want 2: at startup, and for the kid fresh", n)
	}
	select {
	case code := <-first:
		t.Fatalf("the kid fresh was answered %d while its fetch hangs", code)
	default:
	}

	jwks.Release()
	select {
	case code := <-first:
		if code != 200 {
			t.Errorf("the kid fresh, once its fetch ended with the key: %d, want 200", code)
		}
	case <-time.After(waitFor):
		t.Fatalf("the kid fresh got no answer %v after its fetch was released", waitFor)
	}
	c.syncLive(pub.publish)
	pub.publish("m1")
	c.expectData("m1")
}
