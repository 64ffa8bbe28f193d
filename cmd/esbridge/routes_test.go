package main

import (
	"log/slog"
	"net/url"
	"testing"
)

// A source that cannot be made is a nil bridge.Source, not an interface
// holding a nil pointer.
func TestOpenSourceErrorIsNil(t *testing.T) {
	t.Parallel()
	u, err := url.Parse("nats://127.0.0.1:1/ticks?creds=/nonexistent/esbridge.creds")
	if err != nil {
		t.Fatal(err)
	}
	src, err := openSource(u, u.Query(), slog.New(slog.DiscardHandler))
	if err == nil {
		src.Close()
		t.Fatal("openSource succeeded with a missing creds file")
	}
	if src != nil {
		t.Errorf("openSource returned %#v with error %v, want a nil interface", src, err)
	}
}
