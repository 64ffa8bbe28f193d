package bridge_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/fakesource"
)

// BenchmarkResetStream serves streams whose request is cancelled before
// the handler runs, as an HTTP/2 client that resets each stream at once
// (a rapid reset) makes them: what each one costs the bridge, in bytes and
// allocations, beside a /healthz request, which is the floor.
func BenchmarkResetStream(b *testing.B) {
	orders := fakesource.New("orders", 1, 1)
	br, err := bridge.New(bridge.Config{}, bridge.Route{Path: "/orders", Source: orders})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go br.Run(ctx)
	defer br.Shutdown(context.Background())
	reset, cancelReset := context.WithCancel(context.Background())
	cancelReset()
	for _, path := range []string{"/healthz", "/orders"} {
		b.Run(path[1:], func(b *testing.B) {
			req := httptest.NewRequestWithContext(reset, http.MethodGet, path, nil)
			req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/2.0", 2, 0
			b.ReportAllocs()
			for b.Loop() {
				br.ServeHTTP(httptest.NewRecorder(), req)
			}
		})
	}
}
