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

// parseRoutes checks the URL of every -route, PATH=URL split at the first
// "=". Its errors name the flag and show the value with credentials hidden.
// The paths are checked by bridge.New.
func (r routeFlags) parseRoutes() ([]routeFlag, error) {
	var routes []routeFlag
	for _, v := range r {
		f, err := parseRoute(v)
		if err != nil {
			return nil, fmt.Errorf("invalid value %q for flag -route: %w", redact(v), err)
		}
		routes = append(routes, f)
	}
	return routes, nil
}

func parseRoute(v string) (routeFlag, error) {
	path, raw, ok := strings.Cut(v, "=")
	if !ok {
		return routeFlag{}, errors.New("want PATH=URL")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return routeFlag{}, errors.New("the URL cannot be parsed")
	}
	switch _, ok := lookupScheme(u.Scheme); {
	case u.Scheme == "":
		return routeFlag{}, fmt.Errorf("the URL has no scheme (want %s)", schemeList())
	case !ok:
		return routeFlag{}, fmt.Errorf("unknown scheme %q (want %s)", u.Scheme, schemeList())
	}
	return routeFlag{path: path, url: u}, nil
}

// A scheme is a route URL scheme and the source it opens.
type scheme struct {
	name string
	// example is a -route value for the usage text; empty for none.
	example string
	// open makes the source of a URL of this scheme, whose query holds
	// only the source's own parameters.
	open func(u *url.URL, logger *slog.Logger) (bridge.Source, error)
}

// schemes are the route URL schemes: the only list of them, from which
// parseRoute, openSource and the usage text take theirs.
var schemes = []scheme{
	{"nats", "/ticks=nats://127.0.0.1:4222/ticks.>", openNATS},
	{"jetstream", "/orders=jetstream://127.0.0.1:4222/ORDERS", openNATS},
	{"kafka", "/clicks=kafka://127.0.0.1:9092/clicks", openKafka},
	{"amqp", "/trades=amqp://guest:guest@127.0.0.1:5672/?stream=trades", openAMQP},
	{"amqps", "", openAMQP},
}

// lookupScheme returns the scheme named name.
func lookupScheme(name string) (scheme, bool) {
	for _, s := range schemes {
		if s.name == name {
			return s, true
		}
	}
	return scheme{}, false
}

// schemeList lists the schemes for a message: "nats://, ... or amqps://".
func schemeList() string {
	names := make([]string, len(schemes))
	for i, s := range schemes {
		names[i] = s.name + "://"
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
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
	s, ok := lookupScheme(u.Scheme)
	if !ok {
		return nil, fmt.Errorf("unknown scheme %q (want %s)", u.Scheme, schemeList())
	}
	v := *u
	v.RawQuery = query.Encode()
	return s.open(&v, logger)
}

func openNATS(u *url.URL, logger *slog.Logger) (bridge.Source, error) {
	cfg, err := natssource.ParseURL(u)
	if err != nil {
		return nil, err
	}
	cfg.Logger = logger
	return asSource(natssource.New(cfg))
}

func openKafka(u *url.URL, logger *slog.Logger) (bridge.Source, error) {
	cfg, err := kafkasource.ParseURL(u)
	if err != nil {
		return nil, err
	}
	cfg.Logger = logger
	return asSource(kafkasource.New(cfg))
}

func openAMQP(u *url.URL, logger *slog.Logger) (bridge.Source, error) {
	cfg, err := amqpsource.ParseURL(u)
	if err != nil {
		return nil, err
	}
	cfg.Logger = logger
	return asSource(amqpsource.New(cfg))
}

// asSource returns the result of a source constructor as a bridge.Source,
// with a nil interface, not a typed nil pointer, on error.
func asSource[S bridge.Source](s S, err error) (bridge.Source, error) {
	if err != nil {
		return nil, err
	}
	return s, nil
}
