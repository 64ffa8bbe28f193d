package main

import (
	"log/slog"
	"net/url"
	"strings"
	"testing"

	"github.com/esbridge/esbridge/internal/routeurl"
)

// A source that cannot be made is a nil bridge.Source, not an interface
// holding a nil pointer.
func TestOpenSourceErrorIsNil(t *testing.T) {
	t.Parallel()
	u, err := url.Parse("nats://127.0.0.1:1/ticks?creds=/nonexistent/esbridge.creds")
	if err != nil {
		t.Fatal(err)
	}
	src, err := routeurl.OpenSource(u, u.Query(), slog.New(slog.DiscardHandler))
	if err == nil {
		src.Close()
		t.Fatal("openSource succeeded with a missing creds file")
	}
	if src != nil {
		t.Errorf("openSource returned %#v with error %v, want a nil interface", src, err)
	}
}

// Every scheme of the table opens a source for a URL of its own, and is
// named by the usage text and by the message about a wrong scheme; every
// usage example is a route of its scheme.
func TestSchemes(t *testing.T) {
	t.Parallel()
	urls := map[string]string{
		"nats":      "nats://127.0.0.1:1/ticks",
		"jetstream": "jetstream://127.0.0.1:1/ORDERS",
		"kafka":     "kafka://127.0.0.1:1/clicks",
		"amqp":      "amqp://127.0.0.1:1/?queue=q",
		"amqps":     "amqps://127.0.0.1:1/?queue=q",
	}
	_, wrong := parseRoute("/a=ftp://127.0.0.1/x")
	_, none := parseRoute("/a=localhost/S")
	if wrong == nil || none == nil {
		t.Fatalf("a wrong scheme gives %v, no scheme %v; want errors", wrong, none)
	}
	help := usage()
	for _, s := range routeurl.Schemes() {
		for _, msg := range []string{help, wrong.Error(), none.Error()} {
			if !strings.Contains(msg, s.Name+"://") {
				t.Errorf("%q does not name %s://", msg, s.Name)
			}
		}
		if s.Example != "" {
			if f, err := parseRoute(s.Example); err != nil || f.url.Scheme != s.Name {
				t.Errorf("example %s: %v, scheme %q", s.Example, err, f.url.Scheme)
			}
			if !strings.Contains(help, s.Example) {
				t.Errorf("the usage lacks the example %s", s.Example)
			}
		}
		raw, ok := urls[s.Name]
		if !ok {
			t.Errorf("scheme %s: add a URL of it to this test", s.Name)
			continue
		}
		f, err := parseRoute("/a=" + raw)
		if err != nil {
			t.Errorf("%s: %v", raw, err)
			continue
		}
		src, err := routeurl.OpenSource(f.url, f.url.Query(), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Errorf("%s: %v", raw, err)
			continue
		}
		src.Close()
	}
}
