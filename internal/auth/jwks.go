package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
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
	s := &jwksStore{
		Storage: jwkset.NewMemoryStorage(),
		url:     cfg.JWKSURL,
		shown:   u.Redacted(),
		client:  cfg.JWKSClient,
		timeout: orDefault(cfg.JWKSTimeout, 10*time.Second),
		unknown: orDefault(cfg.JWKSUnknownKID, 10*time.Second),
		logger:  a.logger,
	}
	if s.client == nil {
		s.client = &http.Client{}
	}
	refresh := orDefault(cfg.JWKSRefresh, time.Hour)

	ctx, cancel := context.WithCancel(context.Background())
	k, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: s})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%w: JWKS URL %s: %v", ErrConfig, s.shown, err)
	}
	if !s.refresh(ctx) {
		a.logger.Warn("JWKS has no key yet: tokens are refused until a fetch succeeds", "url", s.shown,
			"retry", "when a token names an unknown kid, at most every "+s.unknown.String()+", and every "+refresh.String())
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(refresh)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				s.refresh(ctx)
			case <-ctx.Done():
				return
			}
		}
	})
	a.stopBg = func() {
		cancel()
		wg.Wait()
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

// A jwksStore holds the keys of a JWKS, as the [jwkset.Storage] of the
// Authorizer's keyfunc, and fetches them again: every JWKSRefresh, and
// when a token names a kid it lacks. A request never waits for a fetch
// that another one started: a token whose kid is unknown starts a fetch
// and waits for it (at most JWKSTimeout) if no fetch is in flight and none
// was started for an unknown kid less than JWKSUnknownKID ago, and is
// refused at once otherwise. So a JWKS server that hangs holds up one
// request per JWKSUnknownKID, and none with a known kid.
//
// It is safe for concurrent use.
type jwksStore struct {
	jwkset.Storage // the keys of the last fetch that succeeded

	url     string
	shown   string // url, its password hidden, for the log
	client  *http.Client
	timeout time.Duration // of a fetch
	unknown time.Duration // least time between two fetches for unknown kids
	logger  *slog.Logger

	mu       sync.Mutex
	fetching bool      // a fetch is in flight
	lastKID  time.Time // when the last fetch for an unknown kid started
}

// KeyRead returns the key of kid; if the set lacks it, it fetches the set
// again, within ctx, if no fetch is in flight and the last fetch for an
// unknown kid was long enough ago, else it returns jwkset.ErrKeyNotFound
// at once.
func (s *jwksStore) KeyRead(ctx context.Context, kid string) (jwkset.JWK, error) {
	k, err := s.Storage.KeyRead(ctx, kid)
	if !errors.Is(err, jwkset.ErrKeyNotFound) {
		return k, err
	}
	if !s.begin(true) {
		return jwkset.JWK{}, err
	}
	s.fetchAndEnd(ctx)
	return s.Storage.KeyRead(ctx, kid)
}

// refresh fetches the set, within ctx, unless a fetch is in flight, and
// reports whether the set has a key.
func (s *jwksStore) refresh(ctx context.Context) bool {
	if s.begin(false) {
		s.fetchAndEnd(ctx)
	}
	keys, err := s.Storage.KeyReadAll(ctx)
	return err == nil && len(keys) > 0
}

// begin marks a fetch in flight, for an unknown kid or not, and reports
// true, unless one is in flight already, or forKID and the last fetch for
// an unknown kid started less than s.unknown ago.
func (s *jwksStore) begin(forKID bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.fetching || forKID && !s.lastKID.IsZero() && now.Sub(s.lastKID) < s.unknown {
		return false
	}
	s.fetching = true
	if forKID {
		s.lastKID = now
	}
	return true
}

// fetchAndEnd fetches the set, within ctx and s.timeout, replaces the keys
// with those fetched if it succeeds, logs why if it does not, and ends the
// fetch that begin marked.
func (s *jwksStore) fetchAndEnd(ctx context.Context) {
	defer func() {
		s.mu.Lock()
		s.fetching = false
		s.mu.Unlock()
	}()
	keys, err := s.fetch(ctx)
	if err == nil {
		err = s.Storage.KeyReplaceAll(ctx, keys)
	}
	if err != nil {
		s.logger.Warn("JWKS cannot be fetched", "url", s.shown, "err", err)
	}
}

// fetch gets the set and returns its keys, less those of a type it does
// not support. Its errors do not quote the URL.
func (s *jwksStore) fetch(ctx context.Context) ([]jwkset.JWK, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may have a password
		}
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxJWKSBytes {
		return nil, fmt.Errorf("a set over %d bytes", maxJWKSBytes)
	}
	var set jwkset.JWKSMarshal
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, err
	}
	keys := make([]jwkset.JWK, 0, len(set.Keys))
	for _, m := range set.Keys {
		k, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{Private: true}, jwkset.JWKValidateOptions{})
		switch {
		case errors.Is(err, jwkset.ErrUnsupportedKey):
			continue
		case err != nil:
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
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
