package esource

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"github.com/esbridge/esbridge/internal/ssetest"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestThousandClients fans a stream out to 1,000 concurrent clients over
// loopback and checks that each receives every event, in order.
func TestThousandClients(t *testing.T) {
	checkNoLeaks(t)
	const clients, events = 1000, 300
	es := newSource(t)
	srv := serve(t, es)
	tr := &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	var wg sync.WaitGroup
	results := make(chan string, clients)
	for range clients {
		resp, err := client.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer resp.Body.Close()
			results <- readIDs(resp, events)
		})
	}
	waitClients(t, es, clients)
	for i := 1; i <= events; i++ {
		id := strconv.Itoa(i)
		if err := es.Publish(Event{ID: id, Data: strings.Repeat("x", 100)}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(results)
	for r := range results {
		if r != "" {
			t.Fatal(r)
		}
	}
}

// readIDs reads events until the one with ID n and reports a problem, or
// "" when IDs 1..n arrived in order.
func readIDs(resp *http.Response, n int) string {
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	p := ssetest.NewParser()
	next := 1
	for next <= n {
		line, err := br.ReadSlice('\n')
		for _, ev := range p.Feed(line) {
			if ev.LastEventID != strconv.Itoa(next) {
				return "got event " + ev.LastEventID + ", want " + strconv.Itoa(next)
			}
			next++
		}
		if err != nil {
			return "after event " + strconv.Itoa(next-1) + ": " + err.Error()
		}
	}
	return ""
}

// TestStalledClientCostsNothing checks that a client that stops reading
// holds back neither the publisher nor the other clients, that memory stays
// bounded by the log's configuration, and that the stalled client is
// dropped after the write timeout.
func TestStalledClientCostsNothing(t *testing.T) {
	checkNoLeaks(t)
	const clients, events, size = 20, 20000, 1000 // 20 MB through a 1 MB log
	// A short heartbeat finds the readers that hung up, at the end.
	es := newSource(t, WithBacklog(100000), WithBacklogBytes(1<<20), WithWriteTimeout(time.Second),
		WithHeartbeat(100*time.Millisecond))
	srv := serve(t, es)
	stalled := stalledClient(t, srv.Listener.Addr().String())
	defer stalled.Close()
	waitClients(t, es, 1)

	// Each client reports how far it got, so that the publisher can stay
	// within the log of the live clients (never of the stalled one).
	var mu sync.Mutex
	progress := make([]int, clients)
	var wg sync.WaitGroup
	for c := range clients {
		resp, err := srv.Client().Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer resp.Body.Close()
			br := bufio.NewReaderSize(resp.Body, 64<<10)
			next := 1
			for next <= events {
				line, err := br.ReadSlice('\n')
				if err != nil {
					t.Errorf("client %d: %v after %d events", c, err, next-1)
					return
				}
				if id, ok := bytes.CutPrefix(line, []byte("id: ")); ok {
					if got := string(bytes.TrimSuffix(id, []byte("\n"))); got != strconv.Itoa(next) {
						t.Errorf("client %d: got %s, want %d", c, got, next)
						return
					}
					mu.Lock()
					progress[c] = next
					mu.Unlock()
					next++
				}
			}
		})
	}
	waitClients(t, es, clients+1)
	slowest := func() int {
		mu.Lock()
		defer mu.Unlock()
		return slices.Min(progress)
	}
	data := strings.Repeat("x", size)
	var early, maxHeap uint64
	for i := 1; i <= events; i++ {
		for i-slowest() > 500 { // half the log
			time.Sleep(100 * time.Microsecond)
		}
		if err := es.Publish(Event{ID: strconv.Itoa(i), Data: data}); err != nil {
			t.Fatal(err)
		}
		if i%2000 == 0 {
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			if early == 0 {
				early = ms.HeapInuse
			}
			maxHeap = max(maxHeap, ms.HeapInuse)
		}
	}
	wg.Wait()
	// After the first 2 MB, the log is full: the next 18 MB must not grow
	// the heap by more than noise.
	if maxHeap > early+2<<20 {
		t.Errorf("heap in use grew from %d KB to %d KB publishing 20 MB through a 1 MB log", early>>10, maxHeap>>10)
	}
	t.Logf("heap in use: %d KB after 2 MB published, at most %d KB after 20 MB", early>>10, maxHeap>>10)
	// The readers have hung up, and the stalled client was dropped when
	// its write timed out.
	waitClients(t, es, 0)
}

func TestHTTP2(t *testing.T) {
	checkNoLeaks(t)
	es := newSource(t)
	srv := httptest.NewUnstartedServer(es)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	client := srv.Client()
	client.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}
	client.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	publishN(t, es, 1, 3)
	s := connect(t, client, srv.URL, "1")
	if s.resp.ProtoMajor != 2 {
		t.Fatalf("protocol %s, want HTTP/2", s.resp.Proto)
	}
	if c := s.resp.Header.Get("Connection"); c != "" {
		t.Errorf("Connection header %q on HTTP/2", c)
	}
	s.expect(2, 3)
	publishN(t, es, 4, 5)
	s.expect(4, 5)
}

// recorder is a concurrency-safe, flushable http.ResponseWriter.
type recorder struct {
	mu     sync.Mutex
	header http.Header
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(int)     {}
func (r *recorder) Flush()              {}
func (r *recorder) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.body.Write(b)
}
func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.body.String()
}

func TestHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		es, err := New(WithHeartbeat(15*time.Second), WithRetry(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		rec := &recorder{header: http.Header{}}
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
		go es.ServeHTTP(rec, req)

		time.Sleep(14 * time.Second)
		synctest.Wait()
		if got := rec.String(); got != "retry: 1000\n\n" {
			t.Fatalf("after 14 s: %q, want the retry line alone", got)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := rec.String(); got != "retry: 1000\n\n:\n\n" {
			t.Fatalf("after 16 s: %q, want one heartbeat", got)
		}
		// Activity resets the heartbeat.
		time.Sleep(10 * time.Second) // 26 s
		publishN(t, es, 1, 1)
		time.Sleep(14 * time.Second) // 40 s: 14 s idle
		synctest.Wait()
		if got := rec.String(); strings.Count(got, ":\n\n") != 1 {
			t.Fatalf("after 40 s: %q, want no heartbeat within 15 s of an event", got)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := rec.String(); strings.Count(got, ":\n\n") != 2 {
			t.Fatalf("after 42 s: %q, want a second heartbeat", got)
		}
		cancel()
		es.Shutdown(context.Background())
	})
}

// waiting is a History that waits, with Replay.Wait, for a channel that is
// never closed: a replay waiting for its source, or for a reader.
type waiting struct{}

func (waiting) Replay(ctx context.Context, _ Start, r *Replay) error {
	return r.Wait(ctx, nil)
}

// TestHeartbeatWhileReplaying checks that a client whose History waits
// gets heartbeats meanwhile, as one waiting in the log does.
func TestHeartbeatWhileReplaying(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		es, err := New(WithHeartbeat(15*time.Second), WithRetry(time.Second), WithHistory(waiting{}))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		rec := &recorder{header: http.Header{}}
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
		req.Header.Set("Last-Event-ID", "gone")
		go es.ServeHTTP(rec, req)

		time.Sleep(46 * time.Second)
		synctest.Wait()
		if got := rec.String(); got != "retry: 1000\n\n:\n\n:\n\n:\n\n" {
			t.Fatalf("after 46 s of replay: %q, want three heartbeats", got)
		}
		cancel()
		es.Shutdown(context.Background())
	})
}

// TestWokenClientsFindTheLogFree checks that Publish wakes the clients once
// it has released the log. Woken while it holds es.mu, a crowd of clients
// would each block on es.mu.RLock at once, and the publisher would have to
// release them one by one: with 15,000 clients, the long tail of bench's
// scenario W. Whether the old way shows depends on the scheduler, hence
// the rounds.
func TestWokenClientsFindTheLogFree(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		es, err := New(WithFlushInterval(0))
		if err != nil {
			t.Fatal(err)
		}
		defer es.Close()
		const rounds, clients = 20, 1000
		var blocked atomic.Int32
		for i := range rounds {
			es.mu.RLock()
			wake := es.wake
			es.mu.RUnlock()
			var wg sync.WaitGroup
			for range clients {
				wg.Go(func() {
					<-wake
					if !es.mu.TryRLock() {
						blocked.Add(1)
						return
					}
					es.mu.RUnlock()
				})
			}
			synctest.Wait() // every client waits for the wake
			publishN(t, es, i+1, i+1)
			wg.Wait()
		}
		if n := blocked.Load(); n > 0 {
			t.Errorf("%d of %d clients woken while the publisher held the log", n, rounds*clients)
		}
	})
}
