package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/esbridge/esbridge/bridge"
	amqpsource "github.com/esbridge/esbridge/source/amqp"
	kafkasource "github.com/esbridge/esbridge/source/kafka"
	natssource "github.com/esbridge/esbridge/source/nats"
)

// A routeFlag is one -route PATH=URL.
type routeFlag struct {
	path string
	url  *url.URL
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

// parseRoutes checks every -route, PATH=URL split at the first "=". Its
// errors name the flag and show the value with credentials hidden.
func (r routeFlags) parseRoutes() ([]routeFlag, error) {
	var routes []routeFlag
	seen := map[string]bool{}
	for _, v := range r {
		f, err := parseRoute(v)
		if err == nil && seen[f.path] {
			err = fmt.Errorf("path %s given twice", f.path)
		}
		if err != nil {
			return nil, fmt.Errorf("invalid value %q for flag -route: %w", redact(v), err)
		}
		seen[f.path] = true
		routes = append(routes, f)
	}
	return routes, nil
}

func parseRoute(v string) (routeFlag, error) {
	path, raw, ok := strings.Cut(v, "=")
	switch {
	case !ok:
		return routeFlag{}, errors.New("want PATH=URL")
	case !strings.HasPrefix(path, "/"):
		return routeFlag{}, fmt.Errorf("path %q must begin with /", path)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return routeFlag{}, errors.New("the URL cannot be parsed")
	}
	switch u.Scheme {
	case "nats", "jetstream", "kafka", "amqp", "amqps":
	case "":
		return routeFlag{}, errors.New("the URL has no scheme (want nats://, jetstream://, kafka://, amqp:// or amqps://)")
	default:
		return routeFlag{}, fmt.Errorf("unknown scheme %q (want nats://, jetstream://, kafka://, amqp:// or amqps://)", u.Scheme)
	}
	return routeFlag{path: path, url: u}, nil
}

// secretParams are the URL query parameters that redact hides.
var secretParams = []string{"token", "password", "pass"}

// redact returns a -route value with the URL's password and secret query
// parameters replaced by "xxxxx".
func redact(v string) string {
	path, raw, ok := strings.Cut(v, "=")
	if !ok {
		return v
	}
	u, err := url.Parse(raw)
	if err != nil {
		return path + "=<unparseable URL>"
	}
	q := u.Query()
	for _, name := range secretParams {
		if q.Has(name) {
			q.Set(name, "xxxxx")
		}
	}
	if u.RawQuery != "" {
		u.RawQuery = q.Encode()
	}
	if u.User != nil {
		if _, has := u.User.Password(); !has {
			u.User = url.User("xxxxx") // a user part alone may be a token
		}
	}
	return path + "=" + u.Redacted()
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
			src, err = openSource(f.url, rest, logger.With("route", f.path))
			if err == nil {
				sources = append(sources, src)
				routes = append(routes, bridge.Route{Path: f.path, Source: src, Options: opts})
				continue
			}
		}
		closeAll()
		return nil, nil, fmt.Errorf("invalid value %q for flag -route: %w", redact(f.path+"="+f.url.String()), err)
	}
	return routes, closeAll, nil
}

// openSource makes the source of a route URL; query holds the parameters
// left after the common route options.
func openSource(u *url.URL, query url.Values, logger *slog.Logger) (bridge.Source, error) {
	v := *u
	v.RawQuery = query.Encode()
	switch u.Scheme {
	case "nats", "jetstream":
		cfg, err := natssource.ParseURL(&v)
		if err != nil {
			return nil, err
		}
		cfg.Logger = logger
		return asSource(natssource.New(cfg))
	case "kafka":
		cfg, err := kafkasource.ParseURL(&v)
		if err != nil {
			return nil, err
		}
		cfg.Logger = logger
		return asSource(kafkasource.New(cfg))
	case "amqp", "amqps":
		cfg, err := amqpsource.ParseURL(&v)
		if err != nil {
			return nil, err
		}
		cfg.Logger = logger
		return asSource(amqpsource.New(cfg))
	}
	return nil, fmt.Errorf("unknown scheme %q", u.Scheme)
}

// asSource returns the result of a source constructor as a bridge.Source,
// with a nil interface, not a typed nil pointer, on error.
func asSource[S bridge.Source](s S, err error) (bridge.Source, error) {
	if err != nil {
		return nil, err
	}
	return s, nil
}
