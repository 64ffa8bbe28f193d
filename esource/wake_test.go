package esource

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// gate is a recorder whose writes wait while it is closed.
type gate struct {
	recorder
	mu     sync.Mutex
	open   *sync.Cond
	closed bool
	writes int
}

func newGate() *gate {
	g := &gate{recorder: recorder{header: http.Header{}}}
	g.open = sync.NewCond(&g.mu)
	return g
}

func (g *gate) Write(b []byte) (int, error) {
	g.mu.Lock()
	for g.closed {
		g.open.Wait()
	}
	g.writes++
	g.mu.Unlock()
	return g.recorder.Write(b)
}

func (g *gate) set(closed bool) {
	g.mu.Lock()
	g.closed = closed
	g.mu.Unlock()
	g.open.Broadcast()
}

// An event published while the clients wait goes out at once, however
// soon after the last one: no flush window. One published while a client
// is still writing earlier events is sent with the others published
// meanwhile, once that write ends, or after the flush interval if it
// takes longer (a slow client does not hold the others back for long).
func TestWake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const flush = 5 * time.Millisecond
		es, err := New(WithHeartbeat(0), WithRetry(time.Second), WithFlushInterval(flush))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		fast, slow := &recorder{header: http.Header{}}, newGate()
		for _, w := range []http.ResponseWriter{fast, slow} {
			req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
			go es.Serve(w, req, es.StartOf(req), nil)
		}
		synctest.Wait()
		has := func(w interface{ String() string }, data string) bool {
			return strings.Contains(w.String(), "data: "+data+"\n")
		}

		for i, data := range []string{"a", "b", "c"} {
			if i > 0 {
				time.Sleep(time.Millisecond)
			}
			es.Publish(Event{ID: data, Data: data})
			synctest.Wait()
			if !has(fast, data) || !has(slow, data) {
				t.Fatalf("%q not sent at once, %v after the one before", data, time.Millisecond)
			}
		}

		// The slow client's next write waits: the wave it is in goes on.
		slow.set(true)
		es.Publish(Event{ID: "d", Data: "d"})
		synctest.Wait()
		if !has(fast, "d") {
			t.Fatal("d not sent at once")
		}
		time.Sleep(time.Millisecond)
		es.Publish(Event{ID: "e", Data: "e"})
		es.Publish(Event{ID: "f", Data: "f"})
		time.Sleep(flush - time.Nanosecond)
		synctest.Wait()
		if has(fast, "e") {
			t.Fatal("e sent while a client was still writing d, before the flush interval")
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if !has(fast, "e") || !has(fast, "f") {
			t.Fatalf("e and f not sent after the flush interval: %q", fast.String())
		}

		// Once its write ends, the slow client sends the rest in one.
		before := slow.writes
		slow.set(false)
		synctest.Wait()
		if !has(slow, "f") {
			t.Fatalf("the slow client did not catch up: %q", slow.String())
		}
		if n := slow.writes - before; n != 2 {
			t.Errorf("the slow client wrote d, e and f in %d writes, want 2 (d, then e and f)", n)
		}
		cancel()
		synctest.Wait()
	})
}
