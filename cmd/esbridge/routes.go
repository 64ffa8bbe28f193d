package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/esbridge/esbridge/bridge"
	natssource "github.com/esbridge/esbridge/source/nats"
)

// A routeFlag is one -route PATH=URL.
type routeFlag struct {
	path string
	url  *url.URL
}

// routeFlags collects the -route flags, checking each as it is parsed.
type routeFlags []routeFlag

func (r *routeFlags) String() string {
	var s []string
	for _, f := range *r {
		s = append(s, f.path+"="+f.url.Redacted())
	}
	return strings.Join(s, " ")
}

// Set parses PATH=URL, split at the first "=".
func (r *routeFlags) Set(v string) error {
	path, raw, ok := strings.Cut(v, "=")
	switch {
	case !ok:
		return errors.New("want PATH=URL")
	case !strings.HasPrefix(path, "/"):
		return fmt.Errorf("path %q must begin with /", path)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("bad URL: %w", err)
	}
	switch u.Scheme {
	case "nats", "jetstream":
	case "kafka", "amqp", "amqps":
		return fmt.Errorf("%s:// routes are not supported yet", u.Scheme)
	case "":
		return fmt.Errorf("URL %q has no scheme (want nats:// or jetstream://)", raw)
	default:
		return fmt.Errorf("unknown scheme %q (want nats:// or jetstream://)", u.Scheme)
	}
	for _, f := range *r {
		if f.path == path {
			return fmt.Errorf("path %s given twice", path)
		}
	}
	*r = append(*r, routeFlag{path: path, url: u})
	return nil
}

// open makes the bridge routes, connecting their sources. On error it
// closes what it opened; the error names the flag.
func (r routeFlags) open(logger *slog.Logger) (routes []bridge.Route, closeAll func(), err error) {
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
		return nil, nil, fmt.Errorf("invalid value %q for flag -route: %w", f.path+"="+f.url.Redacted(), err)
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
		return natssource.New(cfg)
	}
	return nil, fmt.Errorf("unknown scheme %q", u.Scheme)
}
