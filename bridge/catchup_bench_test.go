package bridge_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/fakesource"
)

// BenchmarkCatchUp reads a 6-partition stream of 100,000 keyed 100-byte
// messages from its start over HTTP, as scenario R of the bench command
// does on Kafka: one client of a route with Options.Earliest, riding a
// catch-up reader. ns/msg is the time per message of the whole path
// (source reader, catch-up ring, encoding, SSE writes, the client's
// reads), allocs/op what an iteration allocates in all.
func BenchmarkCatchUp(b *testing.B) {
	const partitions, n = 6, 100_000
	stream := fakesource.New("r", partitions, 1)
	data := bytes.Repeat([]byte("x"), 100)
	for i := range n {
		stream.AppendKeyed(i%partitions, []byte(strconv.Itoa(i)), data)
	}
	br, err := bridge.New(bridge.Config{}, bridge.Route{Path: "/r", Source: stream, Options: bridge.Options{Earliest: true}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go br.Run(ctx)
	defer br.Shutdown(context.Background())
	waitBridgeReady(b, br, true)
	srv := httptest.NewServer(br)
	defer srv.Close()

	b.ReportAllocs()
	for b.Loop() {
		if got := readEvents(b, srv.URL+"/r", n); got != n {
			b.Fatalf("received %d events, want %d", got, n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/msg")
}

// readEvents reads the stream at url until it has received n events with
// an ID, and returns how many it received.
func readEvents(b *testing.B, url string, n int) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		b.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b.Fatal(fmt.Sprint("status ", res.StatusCode))
	}
	idLine := []byte("\nid: ")
	buf := make([]byte, 0, 128<<10)
	got := 0
	for got < n {
		k := len(buf)
		m, err := res.Body.Read(buf[k:cap(buf)])
		buf = buf[:k+m]
		got += bytes.Count(buf, idLine)
		if err == io.EOF || err != nil && got < n {
			break
		}
		// Keep the tail that may begin an ID line cut in two.
		tail := len(buf) - (len(idLine) - 1)
		if tail < 0 {
			tail = 0
		}
		buf = buf[:copy(buf, buf[tail:])]
	}
	return got
}
