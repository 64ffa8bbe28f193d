// Package auth authorizes the stream requests of esbridge with JSON Web
// Tokens: it finds a request's token, verifies it with the configured keys
// (HMAC secrets, public keys, a JWKS URL), checks its issuer and audience,
// and whether its routes claim names the route. It knows nothing of
// streams: the program wraps the bridge's handler with [Authorizer.Handler],
// which gives an authorized request a context that ends at the token's
// expiry.
//
// # Tokens
//
// A request's token is taken from the Authorization header (Bearer), else
// from a cookie ([DefaultCookie] unless configured), else from the query
// parameter access_token: a native EventSource cannot set headers. A token
// over [MaxTokenBytes] is refused before it is parsed.
//
// The signing algorithm is pinned to the type of the key: HS256, HS384 or
// HS512 for a secret, RS* or PS* for an RSA key, ES256, ES384 or ES512 for
// an ECDSA key of the matching curve, EdDSA for an Ed25519 key. Keys of a
// JWKS are public keys only. No token is ever accepted unsigned.
//
// The claim routes lists the route paths a token may open, "*" for all, as
// a JSON array or a single string.
//
// # Expiry
//
// A token must have an exp, unless [Config.AllowNoExpiry]: a leaked token
// is not good for ever. Its exp and nbf are checked with
// [Config.Leeway] of clock skew allowed: a token is accepted from
// nbf−Leeway until exp+Leeway, and the stream of an authorized request
// ends at exp+Leeway ([Decision.Expires]).
package auth

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

// MaxTokenBytes bounds a token: a longer one is refused (401) unparsed.
const MaxTokenBytes = 8 << 10

// DefaultCookie is the name of the cookie that carries the token unless
// Config.Cookie names another.
const DefaultCookie = "esbridge_token"

// AllRoutes in the routes claim lets a token open every route.
const AllRoutes = "*"

// ErrConfig is returned by New for a configuration it cannot use.
var ErrConfig = errors.New("auth: bad configuration")

// Config configures an Authorizer. At least one of Secrets, PublicKeys and
// JWKSURL is needed.
type Config struct {
	// Secrets are HMAC keys (HS256, HS384, HS512), of at least
	// MinSecretBytes each.
	Secrets [][]byte

	// PublicKeys are RSA, ECDSA or Ed25519 public keys (see
	// ParsePublicKeyPEM).
	PublicKeys []crypto.PublicKey

	// JWKSURL is the URL of a JSON Web Key Set, whose keys are chosen by
	// the token's kid. It is fetched by New (for at most JWKSTimeout; New
	// does not fail if it cannot be fetched), then every JWKSRefresh, and
	// again when a token names a kid it lacks, at most every
	// JWKSUnknownKID. Only the request that starts such a fetch waits for
	// it: a request whose kid the set lacks, while a fetch is in flight or
	// within JWKSUnknownKID of the last one for an unknown kid, is refused
	// at once.
	JWKSURL string

	// JWKSClient fetches the JWKS; nil means a client of its own.
	JWKSClient *http.Client

	// JWKSRefresh is how often the JWKS is fetched again; zero means an
	// hour.
	JWKSRefresh time.Duration

	// JWKSUnknownKID is the least time between two fetches for tokens
	// whose kid the JWKS lacks; zero means 10 seconds.
	JWKSUnknownKID time.Duration

	// JWKSTimeout bounds each fetch of the JWKS; zero means 10 seconds.
	JWKSTimeout time.Duration

	// Issuer, if not empty, must be the token's iss.
	Issuer string

	// Audience, if not empty, must be among the token's aud.
	Audience string

	// Leeway is the clock skew allowed to the checks of the token's exp
	// and nbf: a token is accepted from nbf−Leeway until exp+Leeway, and
	// the stream of the request ends at exp+Leeway. Zero means none; New
	// refuses a negative one.
	Leeway time.Duration

	// AllowNoExpiry lets in the tokens that have no exp, whose streams
	// then do not end with the token. False refuses them (401).
	AllowNoExpiry bool

	// Cookie is the name of the cookie that carries the token; empty means
	// DefaultCookie.
	Cookie string

	// Logger gets the reason of every refusal (debug) and the JWKS's
	// fetch errors (warn); nil means discard. It never gets a token.
	Logger *slog.Logger

	// OnRefused, if not nil, is called with "auth" for every request
	// refused (401 or 403), for metrics. It must not block.
	OnRefused func(reason string)

	// now is the clock of the token checks; nil means time.Now.
	now func() time.Time
}

// MinSecretBytes is the shortest HMAC secret accepted: 256 bits.
const MinSecretBytes = 32

// An Authorizer decides whether a request may open a route. It is safe
// for concurrent use.
type Authorizer struct {
	cfg     Config
	keys    []key
	jwks    keyfunc.Keyfunc // nil without a JWKS
	parser  *jwt.Parser
	cookie  string
	logger  *slog.Logger
	stopBg  context.CancelFunc
	methods []string // every algorithm some key allows
}

// A key is a configured key and the algorithms it verifies.
type key struct {
	key     any
	methods []string
}

// New returns an Authorizer for cfg, which fetches cfg.JWKSURL (if set)
// until Close. It returns ErrConfig, wrapped, for a configuration without
// keys or with a key it cannot use.
func New(cfg Config) (*Authorizer, error) {
	a := &Authorizer{cfg: cfg, cookie: cfg.Cookie, logger: cfg.Logger}
	if a.logger == nil {
		a.logger = slog.New(slog.DiscardHandler)
	}
	if a.cookie == "" {
		a.cookie = DefaultCookie
	}
	if err := (&http.Cookie{Name: a.cookie, Value: "x"}).Valid(); err != nil {
		return nil, fmt.Errorf("%w: cookie name %q: %v", ErrConfig, a.cookie, err)
	}
	if len(cfg.Secrets) == 0 && len(cfg.PublicKeys) == 0 && cfg.JWKSURL == "" {
		return nil, fmt.Errorf("%w: no key", ErrConfig)
	}
	if cfg.Leeway < 0 {
		return nil, fmt.Errorf("%w: leeway %v, want 0 or more", ErrConfig, cfg.Leeway)
	}
	for i, s := range cfg.Secrets {
		if len(s) < MinSecretBytes {
			return nil, fmt.Errorf("%w: secret %d has %d bytes, want at least %d", ErrConfig, i+1, len(s), MinSecretBytes)
		}
		a.keys = append(a.keys, key{s, methodsFor(s)})
	}
	for i, k := range cfg.PublicKeys {
		m := methodsFor(k)
		if m == nil {
			return nil, fmt.Errorf("%w: public key %d is a %T, want RSA, ECDSA (P-256, P-384, P-521) or Ed25519", ErrConfig, i+1, k)
		}
		a.keys = append(a.keys, key{k, m})
	}
	for _, k := range a.keys {
		a.methods = append(a.methods, k.methods...)
	}
	if cfg.JWKSURL != "" {
		jwks, err := a.openJWKS()
		if err != nil {
			return nil, err
		}
		a.jwks = jwks
		a.methods = append(a.methods, asymmetricMethods...)
	}
	slices.Sort(a.methods)
	a.methods = slices.Compact(a.methods)

	opts := []jwt.ParserOption{jwt.WithValidMethods(a.methods)}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.Leeway > 0 {
		opts = append(opts, jwt.WithLeeway(cfg.Leeway))
	}
	if cfg.now != nil {
		opts = append(opts, jwt.WithTimeFunc(cfg.now))
	}
	a.parser = jwt.NewParser(opts...)
	return a, nil
}

// Close stops the background fetches of the JWKS and waits for the one in
// flight, if any, to end. It is idempotent.
func (a *Authorizer) Close() {
	if a.stopBg != nil {
		a.stopBg()
	}
}

// A Decision is the answer to one request.
type Decision struct {
	// Status is http.StatusOK, http.StatusUnauthorized (no valid token) or
	// http.StatusForbidden (a valid token that does not name the route).
	Status int

	// Reason says why a request is refused, in a few words for the log;
	// it never holds any of the token.
	Reason string

	// Expires is when the token stops being accepted, its exp plus
	// Config.Leeway: the stream of the request ends then. It is zero for
	// a token without exp (Config.AllowNoExpiry).
	Expires time.Time
}

// claims are the claims read from a token.
type claims struct {
	jwt.RegisteredClaims
	Routes jwt.ClaimStrings `json:"routes"`
}

// Authorize decides whether r may open the route at path. ctx bounds a
// fetch of the JWKS that a token with an unknown kid may cause.
func (a *Authorizer) Authorize(ctx context.Context, r *http.Request, path string) Decision {
	tok, from := a.token(r)
	switch {
	case from == "":
		return Decision{Status: http.StatusUnauthorized, Reason: "no token"}
	case len(tok) > MaxTokenBytes:
		return Decision{Status: http.StatusUnauthorized, Reason: "token too long (" + from + ")"}
	}
	var c claims
	if _, err := a.parser.ParseWithClaims(tok, &c, a.keyfunc(ctx)); err != nil {
		return Decision{Status: http.StatusUnauthorized, Reason: reason(err) + " (" + from + ")"}
	}
	var exp time.Time
	switch {
	case c.ExpiresAt != nil:
		exp = c.ExpiresAt.Time.Add(a.cfg.Leeway)
	case !a.cfg.AllowNoExpiry:
		return Decision{Status: http.StatusUnauthorized, Reason: "token without exp (" + from + ")"}
	}
	if !slices.Contains(c.Routes, AllRoutes) && !slices.Contains(c.Routes, path) {
		return Decision{Status: http.StatusForbidden, Reason: "the token's routes claim does not name the route", Expires: exp}
	}
	return Decision{Status: http.StatusOK, Expires: exp}
}

// token returns the request's token and where it was found: "header",
// "cookie", "query", or "" if nowhere.
func (a *Authorizer) token(r *http.Request) (tok, from string) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, t, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(t), "header"
		}
	}
	if c, err := r.Cookie(a.cookie); err == nil && c.Value != "" {
		return c.Value, "cookie"
	}
	if t := r.URL.Query().Get("access_token"); t != "" {
		return t, "query"
	}
	return "", ""
}

// reason names, in a few fixed words, why a token was refused: never with
// the error's text, which may quote the token.
func reason(err error) string {
	for _, r := range []struct {
		err  error
		text string
	}{
		{jwt.ErrTokenMalformed, "malformed token"},
		{jwt.ErrTokenExpired, "token expired"},
		{jwt.ErrTokenNotValidYet, "token not valid yet"},
		{jwt.ErrTokenUsedBeforeIssued, "token used before issued"},
		{jwt.ErrTokenInvalidIssuer, "wrong issuer"},
		{jwt.ErrTokenInvalidAudience, "wrong audience"},
		{jwt.ErrTokenUnverifiable, "no key for the token"},
		{jwt.ErrTokenSignatureInvalid, "bad signature or algorithm"},
		{jwt.ErrTokenInvalidClaims, "invalid claims"},
	} {
		if errors.Is(err, r.err) {
			return r.text
		}
	}
	return "invalid token"
}
