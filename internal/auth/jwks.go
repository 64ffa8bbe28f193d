package auth

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// maxJWKSBytes bounds a JWKS response.
const maxJWKSBytes = 1 << 20

// openJWKS makes the key set of a.cfg.JWKSURL: fetched once now, for at
// most JWKSTimeout (a failure is logged, not returned: the set is fetched
// again when a token names a kid it lacks), then in the background until
// Close.
func (a *Authorizer) openJWKS() (keyfunc.Keyfunc, error) {
	cfg := a.cfg
	u, err := url.Parse(cfg.JWKSURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: JWKS URL: want http:// or https://HOST/PATH", ErrConfig)
	}
	shown := u.Redacted()
	refresh := orDefault(cfg.JWKSRefresh, time.Hour)
	unknown := orDefault(cfg.JWKSUnknownKID, 10*time.Second)
	timeout := orDefault(cfg.JWKSTimeout, 10*time.Second)
	client := cfg.JWKSClient
	if client == nil {
		client = &http.Client{}
	}
	// A copy whose responses are bounded.
	bounded := *client
	bounded.Transport = limitedTransport{next: client.Transport}
	if bounded.Timeout == 0 || bounded.Timeout > timeout {
		bounded.Timeout = timeout
	}

	ctx, cancel := context.WithCancel(context.Background())
	a.stopBg = cancel
	k, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{cfg.JWKSURL}, keyfunc.Override{
		Client:      &bounded,
		HTTPTimeout: timeout,
		// A request whose kid is unknown waits for nothing: it is refused
		// at once if a fetch was made less than JWKSUnknownKID ago.
		RateLimitWaitMax:  timeout,
		RefreshInterval:   refresh,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(unknown), 1),
		RefreshErrorHandlerFunc: func(string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				a.logger.Warn("JWKS cannot be fetched", "url", shown, "err", err)
			}
		},
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%w: JWKS URL %s: %v", ErrConfig, shown, err)
	}
	if keys, err := k.Storage().KeyReadAll(ctx); err != nil || len(keys) == 0 {
		a.logger.Warn("JWKS has no key yet: tokens are refused until a fetch succeeds", "url", shown,
			"retry", "when a token names an unknown kid, at most every "+unknown.String()+", and every "+refresh.String())
	}
	return k, nil
}

// orDefault returns d, or def if d is not positive.
func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// keyfunc returns the jwt.Keyfunc of a token: every configured key whose
// type verifies the token's algorithm, and the JWKS's key of its kid if
// that is a public key of the algorithm's type.
func (a *Authorizer) keyfunc(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		alg := t.Method.Alg()
		var set jwt.VerificationKeySet
		for _, k := range a.keys {
			if slices.Contains(k.methods, alg) {
				set.Keys = append(set.Keys, k.key)
			}
		}
		if a.jwks != nil {
			if k, err := a.jwks.KeyfuncCtx(ctx)(t); err == nil {
				set.Keys = append(set.Keys, pinned(k, alg)...)
			}
		}
		if len(set.Keys) == 0 {
			return nil, fmt.Errorf("no key for algorithm %s", alg)
		}
		return set, nil
	}
}

// pinned returns the keys of k (one key, or a set: the JWKS gives a set
// for a token without kid) that are public keys verifying alg. A JWKS's
// symmetric keys are never used.
func pinned(k any, alg string) []jwt.VerificationKey {
	var keys []jwt.VerificationKey
	all := []jwt.VerificationKey{k}
	if vs, ok := k.(jwt.VerificationKeySet); ok {
		all = vs.Keys
	}
	for _, k := range all {
		if _, secret := k.([]byte); !secret && slices.Contains(methodsFor(k), alg) {
			keys = append(keys, k)
		}
	}
	return keys
}

// limitedTransport bounds the bodies of the responses of next.
type limitedTransport struct{ next http.RoundTripper }

func (t limitedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	next := t.next
	if next == nil {
		next = http.DefaultTransport
	}
	resp, err := next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = limitedBody{io.LimitReader(resp.Body, maxJWKSBytes), resp.Body}
	return resp, nil
}

// limitedBody reads at most maxJWKSBytes of a body.
type limitedBody struct {
	io.Reader
	io.Closer
}
