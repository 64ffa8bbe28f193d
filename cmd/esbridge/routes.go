package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/routeurl"
)

// A routeFlag is one -route PATH=URL.
type routeFlag struct {
	path   string
	url    *url.URL // without the option auth, its ${NAME} replaced
	public bool     // auth=none: open without a token
	given  string   // the value as given, with its ${NAME}: what messages show
}

// routeFlags collects the -route flags as given; parseRoutes checks them,
// so that an error can show a value without its secrets (the flag package
// would print it whole).
type routeFlags []string

func (r *routeFlags) String() string { return strings.Join(*r, " ") }

func (r *routeFlags) Set(v string) error {
	*r = append(*r, v)
	return nil
}

// parseRoutes checks the URL of every -route, PATH=URL split at the first
// "=", once its ${NAME} are replaced from env. Its errors name the flag and
// show the value as given, with credentials hidden: a value of the
// environment never shows. The paths are checked by bridge.New.
func (r routeFlags) parseRoutes(env environment) ([]routeFlag, error) {
	var routes []routeFlag
	for _, v := range r {
		f, err := parseRouteEnv(v, env)
		if err != nil {
			return nil, fmt.Errorf("invalid value %q for flag -route: %w", redact(v), err)
		}
		routes = append(routes, f)
	}
	return routes, nil
}

// parseRouteEnv parses v, a -route value, with the ${NAME} of its URL
// replaced from env.
func parseRouteEnv(v string, env environment) (routeFlag, error) {
	path, raw, ok := strings.Cut(v, "=")
	if !ok {
		return routeFlag{}, errors.New("want PATH=URL")
	}
	raw, err := env.expandURL(raw)
	if err != nil {
		return routeFlag{}, err
	}
	f, err := parseRoute(path + "=" + raw)
	f.given = v
	return f, err
}

// parseRoute parses v, a -route value whose URL has no ${NAME} left.
func parseRoute(v string) (routeFlag, error) {
	path, raw, ok := strings.Cut(v, "=")
	if !ok {
		return routeFlag{}, errors.New("want PATH=URL")
	}
	if bridge.Reserved(path) {
		return routeFlag{}, fmt.Errorf("the path %s is reserved for esbridge (/healthz, /readyz, and every path under /_, such as %s)", path, bridge.StreamsPath)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return routeFlag{}, urlError(err)
	}
	switch _, ok := routeurl.Lookup(u.Scheme); {
	case u.Scheme == "":
		return routeFlag{}, fmt.Errorf("the URL has no scheme (want %s)", routeurl.List())
	case !ok:
		return routeFlag{}, fmt.Errorf("unknown scheme %q (want %s)", u.Scheme, routeurl.List())
	}
	public, err := takeAuthOption(u)
	if err != nil {
		return routeFlag{}, err
	}
	return routeFlag{path: path, url: u, public: public, given: v}, nil
}

// urlError describes why url.Parse refused a URL, without the URL, which
// may hold a password. An invalid escape is not quoted either: it may be a
// part of one.
func urlError(err error) error {
	var ue *url.Error
	var ee url.EscapeError
	switch {
	case errors.As(err, &ee):
		return errors.New("the URL cannot be parsed: a % not followed by two hexadecimal digits")
	case errors.As(err, &ue):
		return fmt.Errorf("the URL cannot be parsed: %v", ue.Err)
	}
	return errors.New("the URL cannot be parsed")
}

// secretParams are the URL query parameters that redact hides.
var secretParams = []string{"token", "password", "pass"}

// redact returns a -route value with the URL's password and secret query
// parameters replaced by "xxxxx". Its ${NAME} stay as they are.
func redact(v string) string {
	path, raw, ok := strings.Cut(v, "=")
	if !ok {
		return v
	}
	// A ${NAME} is not a part of a URL that url.Parse takes everywhere
	// (in a host, in a password): each stands in as a word of its own
	// while the URL is parsed and redacted.
	refs, err := references(raw)
	if err != nil {
		refs = nil
	}
	// A secret that is a ${NAME} alone is not hidden: its name says where
	// it comes from, and is no secret.
	word := func(i int) string { return "esbridgeref" + strconv.Itoa(i) + "x" }
	words := map[string]bool{}
	for i := len(refs) - 1; i >= 0; i-- {
		raw = raw[:refs[i].start] + word(i) + raw[refs[i].end:]
		words[word(i)] = true
	}
	isRef := func(s string) bool { return words[s] }
	u, err := url.Parse(raw)
	if err != nil {
		return path + "=<unparseable URL>"
	}
	q := u.Query()
	for _, name := range secretParams {
		if q.Has(name) && !isRef(q.Get(name)) {
			q.Set(name, "xxxxx")
		}
	}
	if u.RawQuery != "" {
		u.RawQuery = q.Encode()
	}
	if u.User != nil {
		switch p, has := u.User.Password(); {
		case has && !isRef(p):
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		case !has && !isRef(u.User.Username()):
			u.User = url.User("xxxxx") // a user part alone may be a token
		}
	}
	out := u.String()
	for i, r := range refs {
		out = strings.ReplaceAll(out, word(i), "${"+r.name+"}")
	}
	return path + "=" + out
}

// openRoutes makes the bridge routes, connecting their sources. On error it
// closes what it opened; the error names the flag.
func openRoutes(r []routeFlag, logger *slog.Logger) (routes []bridge.Route, closeAll func(), err error) {
	var sources []bridge.Source
	closeAll = func() {
		for _, s := range sources {
			s.Close()
		}
	}
	for _, f := range r {
		opts, rest, err := bridge.ParseOptions(f.url.Query())
		if err == nil {
			var src bridge.Source
			src, err = routeurl.OpenSource(f.url, rest, logger.With("route", f.path))
			if err == nil {
				sources = append(sources, src)
				routes = append(routes, bridge.Route{Path: f.path, Source: src, Options: opts})
				continue
			}
		}
		closeAll()
		return nil, nil, fmt.Errorf("invalid value %q for flag -route: %w", redact(f.given), err)
	}
	return routes, closeAll, nil
}
