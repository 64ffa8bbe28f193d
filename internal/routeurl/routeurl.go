// Package routeurl turns route URLs into sources: the one table of the
// URL schemes esbridge serves, for the program and for the benchmarks
// that run it.
package routeurl

import (
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/esbridge/esbridge/bridge"
	amqpsource "github.com/esbridge/esbridge/source/amqp"
	kafkasource "github.com/esbridge/esbridge/source/kafka"
	natssource "github.com/esbridge/esbridge/source/nats"
)

// A Scheme is a route URL scheme and the source it opens.
type Scheme struct {
	Name string
	// Example is a -route value for a usage text; empty for none.
	Example string
	// open makes the source of a URL of this scheme, whose query holds
	// only the source's own parameters.
	open func(u *url.URL, logger *slog.Logger) (bridge.Source, error)
}

// schemes are the route URL schemes: the only list of them.
var schemes = []Scheme{
	{"nats", "/ticks=nats://127.0.0.1:4222/ticks.>", openNATS},
	{"jetstream", "/orders=jetstream://127.0.0.1:4222/ORDERS", openNATS},
	{"kafka", "/clicks=kafka://127.0.0.1:9092/clicks", openKafka},
	{"amqp", "/trades=amqp://guest:guest@127.0.0.1:5672/?stream=trades", openAMQP},
	{"amqps", "", openAMQP},
}

// Schemes returns the schemes, in the order of a usage text.
func Schemes() []Scheme { return append([]Scheme(nil), schemes...) }

// Lookup returns the scheme named name.
func Lookup(name string) (Scheme, bool) {
	for _, s := range schemes {
		if s.Name == name {
			return s, true
		}
	}
	return Scheme{}, false
}

// List lists the schemes for a message: "nats://, ... or amqps://".
func List() string {
	names := make([]string, len(schemes))
	for i, s := range schemes {
		names[i] = s.Name + "://"
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// OpenSource makes the source of a route URL; query holds the parameters
// left after the common route options (see bridge.ParseOptions). On error
// the source is a nil interface.
func OpenSource(u *url.URL, query url.Values, logger *slog.Logger) (bridge.Source, error) {
	s, ok := Lookup(u.Scheme)
	if !ok {
		return nil, fmt.Errorf("unknown scheme %q (want %s)", u.Scheme, List())
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
