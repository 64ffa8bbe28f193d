package main

import (
	"crypto"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/auth"
)

// authFlags are the -jwt-* flags. Any key flag turns authorization on for
// every route but those with the route option auth=none.
type authFlags struct {
	secretFiles    listFlag
	publicKeyFiles listFlag
	jwksURL        string
	issuer         string
	audience       string
	cookie         string
	leeway         time.Duration
	allowNoExp     bool
}

// listFlag collects the values of a repeatable flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, " ") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// register defines the flags in fs.
func (f *authFlags) register(fs *flag.FlagSet) {
	fs.Var(&f.secretFiles, "jwt-secret-file", "`FILE` of an HMAC secret (repeatable)")
	fs.Var(&f.publicKeyFiles, "jwt-public-key-file", "PEM `FILE` of a public key (repeatable)")
	fs.StringVar(&f.jwksURL, "jwt-jwks-url", "", "`URL` of a JSON Web Key Set")
	fs.StringVar(&f.issuer, "jwt-issuer", "", "the tokens' iss, checked when given")
	fs.StringVar(&f.audience, "jwt-audience", "", "an aud the tokens must have, checked when given")
	fs.StringVar(&f.cookie, "jwt-cookie", auth.DefaultCookie, "`NAME` of the cookie that carries the token")
	fs.DurationVar(&f.leeway, "jwt-leeway", defaultLeeway, "clock skew allowed to the tokens' exp and nbf; a stream ends at exp plus it")
	fs.BoolVar(&f.allowNoExp, "jwt-allow-no-exp", false, "accept tokens without exp, whose streams then do not end")
}

// defaultLeeway is the default of -jwt-leeway: a few seconds of clock skew
// between the token's issuer and esbridge.
const defaultLeeway = 5 * time.Second

// on reports whether a key flag is given.
func (f *authFlags) on() bool {
	return len(f.secretFiles) > 0 || len(f.publicKeyFiles) > 0 || f.jwksURL != ""
}

// check checks the flags that need no file or network. Errors name the flag.
func (f *authFlags) check() error {
	if err := (&http.Cookie{Name: f.cookie, Value: "x"}).Valid(); err != nil {
		return fmt.Errorf("invalid value %q for flag -jwt-cookie: not a cookie name", f.cookie)
	}
	if f.leeway < 0 {
		return fmt.Errorf("invalid value %v for flag -jwt-leeway: must be 0 or more", f.leeway)
	}
	if f.jwksURL != "" {
		u, err := url.Parse(f.jwksURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("invalid value for flag -jwt-jwks-url: want http:// or https://HOST/PATH")
		}
	}
	if !f.on() {
		switch {
		case f.issuer != "":
			return errors.New("flag -jwt-issuer needs a key: -jwt-secret-file, -jwt-public-key-file or -jwt-jwks-url")
		case f.audience != "":
			return errors.New("flag -jwt-audience needs a key: -jwt-secret-file, -jwt-public-key-file or -jwt-jwks-url")
		case f.allowNoExp:
			return errors.New("flag -jwt-allow-no-exp needs a key: -jwt-secret-file, -jwt-public-key-file or -jwt-jwks-url")
		}
	}
	return nil
}

// open reads the key files and makes the Authorizer, which fetches the
// JWKS and calls onRefused for each request it refuses; nil without a key
// flag. Errors name the flag.
func (f *authFlags) open(logger *slog.Logger, onRefused func(reason string)) (*auth.Authorizer, error) {
	if !f.on() {
		return nil, nil
	}
	cfg := auth.Config{JWKSURL: f.jwksURL, Issuer: f.issuer, Audience: f.audience, Cookie: f.cookie,
		Leeway: f.leeway, AllowNoExpiry: f.allowNoExp, Logger: logger, OnRefused: onRefused}
	for _, path := range f.secretFiles {
		s, err := auth.ReadSecretFile(path)
		if err != nil {
			return nil, fmt.Errorf("invalid value %q for flag -jwt-secret-file: %w", path, err)
		}
		cfg.Secrets = append(cfg.Secrets, s)
	}
	for _, path := range f.publicKeyFiles {
		k, err := auth.ReadPublicKeyFile(path)
		if err != nil {
			return nil, fmt.Errorf("invalid value %q for flag -jwt-public-key-file: %w", path, err)
		}
		cfg.PublicKeys = append(cfg.PublicKeys, crypto.PublicKey(k))
	}
	a, err := auth.New(cfg)
	if err != nil {
		// The files and the cookie are checked: what is left is the JWKS.
		return nil, fmt.Errorf("invalid value for flag -jwt-jwks-url: %w", err)
	}
	return a, nil
}

// protectedPaths returns the paths of the routes without auth=none.
func protectedPaths(routes []routeFlag) []string {
	var paths []string
	for _, r := range routes {
		if !r.public {
			paths = append(paths, r.path)
		}
	}
	return paths
}

// routesOpened returns the function that tells the authorizer which of
// the protected routes a request opens: its path's, or for a merged
// stream every protected route it names. A merged stream whose query
// bridge.ParseStreams refuses opens none: the bridge answers 400.
func routesOpened(protected []string) func(r *http.Request) []string {
	paths := make(map[string]bool, len(protected))
	for _, p := range protected {
		paths[p] = true
	}
	return func(r *http.Request) []string {
		if r.URL.Path != bridge.StreamsPath {
			if paths[r.URL.Path] {
				return []string{r.URL.Path}
			}
			return nil
		}
		named, err := bridge.ParseStreams(r.URL.RawQuery)
		if err != nil {
			return nil
		}
		var opened []string
		for _, n := range named {
			if paths[n.Path] {
				opened = append(opened, n.Path)
			}
		}
		return opened
	}
}

// takeAuthOption removes the route option auth from u's query: it is the
// program's, not the bridge's (bridge.ParseOptions refuses options it does
// not know, and the library leaves authorization to its user). It reports
// whether the route is public (auth=none).
func takeAuthOption(u *url.URL) (public bool, err error) {
	q := u.Query()
	if !q.Has("auth") {
		return false, nil
	}
	if v := q["auth"]; len(v) != 1 || v[0] != "none" {
		return false, fmt.Errorf("auth=%q: want none (a public route)", q.Get("auth"))
	}
	q.Del("auth")
	u.RawQuery = q.Encode()
	return true, nil
}
