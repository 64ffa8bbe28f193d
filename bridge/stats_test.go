package bridge_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/esource"
	"github.com/esbridge/esbridge/internal/fakesource"
	"github.com/esbridge/esbridge/internal/poll"
)

// headed is an in-memory stream that tells its head: its partitions'
// lengths, with extra more messages in partition 1 than its readers will
// ever read (the broker's head ahead of the live reader), or an error.
type headed struct {
	*fakesource.Stream
	extra uint64
	fail  atomic.Bool
	calls atomic.Int32
}

func (h *headed) Head(ctx context.Context) (bridge.Position, error) {
	h.calls.Add(1)
	if h.fail.Load() {
		return nil, errors.New("the broker does not answer")
	}
	head := h.Lengths()
	head[1] += h.extra
	return head, nil
}

// startBridge runs a bridge of routes until the test ends.
func startBridge(t *testing.T, cfg bridge.Config, routes ...bridge.Route) *bridge.Bridge {
	t.Helper()
	b, err := bridge.New(cfg, routes...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		b.Run(ctx)
	}()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		b.Shutdown(sctx)
		cancel()
		<-ran
	})
	return b
}

// waitStats polls b.Stats until ok accepts those of route i.
func waitStats(t *testing.T, b *bridge.Bridge, i int, what string, ok func(bridge.RouteStats) bool) bridge.RouteStats {
	t.Helper()
	var st bridge.RouteStats
	if !poll.Wait(10*time.Second, func() bool { st = b.Stats(t.Context())[i]; return ok(st) }) {
		t.Fatalf("route %s: stats %+v after 10s, want %s", st.Path, st, what)
	}
	return st
}

// The lag of a route is the broker's head minus the live reader's
// position, summed over the partitions; 0 once the reader has read all.
// It is known only for a source that tells its head, while the route is
// ready and the broker answers.
func TestStatsLag(t *testing.T) {
	exact := &headed{Stream: fakesource.New("exact", 3, 1)}
	ahead := &headed{Stream: fakesource.New("ahead", 3, 2), extra: 7}
	plain := fakesource.New("plain", 1, 3)
	b := startBridge(t, bridge.Config{},
		bridge.Route{Path: "/exact", Source: exact},
		bridge.Route{Path: "/ahead", Source: ahead},
		bridge.Route{Path: "/plain", Source: plain})
	waitBridgeReady(t, b, true)
	for p := range 3 {
		for range 5 {
			exact.Append(p, []byte("m"))
			ahead.Append(p, []byte("m"))
		}
	}
	plain.Append(0, []byte("m"))
	waitStats(t, b, 0, "lag 0, 15 events", func(st bridge.RouteStats) bool {
		return st.LagKnown && st.Lag == 0 && st.Published == 1+15 // the live reader's start, then the messages
	})
	waitStats(t, b, 1, "lag 7", func(st bridge.RouteStats) bool {
		return st.LagKnown && st.Lag == 7 && st.Published == 1+15
	})
	st := b.Stats(t.Context())
	if st[2].LagKnown || st[2].Path != "/plain" || st[2].Stream != "fake/plain" || !st[2].Ready {
		t.Errorf("route of a source without a head: %+v, want ready, with no lag", st[2])
	}

	// However often Stats is called, the broker is asked once a second.
	calls, began := exact.calls.Load(), time.Now()
	for range 50 {
		b.Stats(t.Context())
	}
	if n, most := exact.calls.Load()-calls, int32(time.Since(began)/time.Second)+1; n > most {
		t.Errorf("the head was looked up %d times in %v, want at most %d", n, time.Since(began), most)
	}

	ahead.fail.Store(true)
	waitStats(t, b, 1, "no lag: the broker does not answer", func(st bridge.RouteStats) bool { return !st.LagKnown })
	exact.Delete() // the route is not ready: its broker is not asked
	waitStats(t, b, 0, "not ready, no lag", func(st bridge.RouteStats) bool { return !st.Ready && !st.LagKnown })
	calls = exact.calls.Load()
	time.Sleep(1100 * time.Millisecond) // past the cached lag
	if b.Stats(t.Context()); exact.calls.Load() != calls {
		t.Errorf("the head of a route that is not ready was looked up")
	}
}

// Stats count a route's catch-up readers, and the clients that wait for
// one while the route has as many as it may.
func TestStatsCatchUp(t *testing.T) {
	stream := fakesource.New("t", 1, 1)
	b := startBridge(t, bridge.Config{Backlog: 4}, bridge.Route{Path: "/s", Source: stream, Options: bridge.Options{CatchUpReaders: 1}})
	waitBridgeReady(t, b, true)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	watch, err := bridge.Tee(ctx, b, "/s", "")
	if err != nil {
		t.Fatal(err)
	}
	// The watcher is a client once it is ranged over: then the messages
	// come.
	ids := make(chan string, 20)
	go func() {
		defer close(ids)
		for ev := range watch {
			if ev.Data == nil {
				continue // no message: an ID alone
			}
			ids <- ev.ID
			if ev.Data == "m19" {
				return
			}
		}
	}()
	waitClient(t, b, "/s")
	for i := range 20 {
		stream.Append(0, []byte("m"+strconv.Itoa(i)))
	}
	var tenth string // the ID of the 10th message
	n := 0
	for id := range ids {
		if n++; n == 10 {
			tenth = id
		}
	}
	if n != 20 {
		t.Fatalf("the watcher got %d messages, want 20", n)
	}

	// A slow watcher was caught up by a reader, which ends with it.
	waitStats(t, b, 0, "no catch-up reader", func(st bridge.RouteStats) bool { return st.CatchUpReaders == 0 })

	// The first client rides the one reader, and holds it: it does not
	// read on until released.
	release := make(chan struct{})
	first := make(chan error, 1)
	go func() {
		events, err := bridge.Tee(ctx, b, "/s", tenth)
		if err != nil {
			first <- err
			return
		}
		n := 0
		for ev := range events {
			if n == 0 {
				<-release
			}
			if n++; ev.Data == "m19" {
				break
			}
		}
		first <- nil
	}()
	waitStats(t, b, 0, "1 catch-up reader", func(st bridge.RouteStats) bool { return st.CatchUpReaders == 1 })

	// The second client is behind the reader: it waits for another.
	second := make(chan error, 1)
	go func() {
		events, err := bridge.Tee(ctx, b, "/s", bridge.Origin(b, "/s"))
		if err != nil {
			second <- err
			return
		}
		for ev := range events {
			if ev.Type == esource.GapType {
				second <- errors.New("a gap")
				return
			}
			if ev.Data == "m19" {
				break
			}
		}
		second <- nil
	}()
	st := waitStats(t, b, 0, "1 client waiting", func(st bridge.RouteStats) bool { return st.CatchUpWaiting == 1 })
	// Both clients are replays, as is a slow watcher's catch-up.
	if st.CatchUpReaders != 1 || st.Replays != 2+st.Slow {
		t.Errorf("stats %+v, want 1 reader and 2 replays besides the slow clients'", st)
	}
	close(release)
	for _, c := range []chan error{first, second} {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	waitStats(t, b, 0, "no reader, none waiting", func(st bridge.RouteStats) bool {
		return st.CatchUpReaders == 0 && st.CatchUpWaiting == 0
	})
}

// With TerseReadyz, /readyz says only whether the bridge is ready, with
// the same status; ServeReadyz names every route, its stream and state.
func TestTerseReadyz(t *testing.T) {
	up := fakesource.New("up", 1, 1)
	down := fakesource.New("down", 1, 2)
	down.Delete()
	b := startBridge(t, bridge.Config{TerseReadyz: true},
		bridge.Route{Path: "/up", Source: up}, bridge.Route{Path: "/down", Source: down})
	waitStats(t, b, 0, "ready", func(st bridge.RouteStats) bool { return st.Ready })
	pub := httptest.NewServer(b)
	defer pub.Close()
	admin := httptest.NewServer(http.HandlerFunc(b.ServeReadyz))
	defer admin.Close()
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get(pub.URL + "/readyz"); code != 503 || body != "not ready\n" {
		t.Errorf("public /readyz: %d %q, want 503 \"not ready\\n\"", code, body)
	}
	want := "not ready\n/up fake/up ready\n/down fake/down not ready\n"
	if code, body := get(admin.URL + "/readyz"); code != 503 || body != want {
		t.Errorf("detailed /readyz: %d %q, want 503 %q", code, body, want)
	}
	down.Create(1)
	waitStats(t, b, 1, "ready", func(st bridge.RouteStats) bool { return st.Ready })
	if code, body := get(pub.URL + "/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("public /readyz: %d %q, want 200 \"ready\\n\"", code, body)
	}
	if code, body := get(admin.URL + "/readyz"); code != 200 || !strings.HasPrefix(body, "ready\n/up fake/up ready\n/down fake/down ready\n") {
		t.Errorf("detailed /readyz: %d %q, want 200 and every route ready", code, body)
	}
}
