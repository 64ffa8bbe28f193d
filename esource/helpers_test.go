package esource

import (
	"context"
	"github.com/esbridge/esbridge/internal/poll"
	"github.com/esbridge/esbridge/internal/ssetest"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// newSource returns an EventSource that is shut down when the test ends.
func newSource(t testing.TB, opts ...Option) *EventSource {
	t.Helper()
	es, err := New(opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := es.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return es
}

// serve starts an HTTP server for es, closed when the test ends.
func serve(t *testing.T, es *EventSource) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(es)
	t.Cleanup(srv.Close)
	return srv
}

// publishN publishes events with IDs from..to (inclusive) and data "e<ID>".
func publishN(t testing.TB, es *EventSource, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		id := strconv.Itoa(i)
		if err := es.Publish(Event{ID: id, Data: "e" + id}); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
}

// stream is a test client reading an event stream as a browser would.
type stream struct {
	t      testing.TB
	resp   *http.Response
	events chan ssetest.Event
	done   chan struct{} // closed when the body ends
	parser *ssetest.Parser
	err    error
}

// connect opens url with the Last-Event-ID header set when lastID is not
// empty. It fails the test on a status other than 200.
func connect(t testing.TB, client *http.Client, url, lastID string) *stream {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d", url, resp.StatusCode)
	}
	s := &stream{t: t, resp: resp, events: make(chan ssetest.Event, 1<<16), done: make(chan struct{}), parser: ssetest.NewParser()}
	go s.read()
	t.Cleanup(func() {
		resp.Body.Close()
		<-s.done
	})
	return s
}

func (s *stream) read() {
	defer close(s.done)
	defer close(s.events)
	buf := make([]byte, 32<<10)
	for {
		n, err := s.resp.Body.Read(buf)
		for _, ev := range s.parser.Feed(buf[:n]) {
			s.events <- ev
		}
		if err != nil {
			if err != io.EOF {
				s.err = err
			}
			return
		}
	}
}

// next returns the next event, failing the test if none comes in time.
func (s *stream) next() ssetest.Event {
	s.t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			s.t.Fatalf("stream ended (%v), want another event", s.err)
		}
		return ev
	case <-time.After(10 * time.Second):
		s.t.Fatal("no event in 10s")
	}
	return ssetest.Event{}
}

// expect reads events and checks they are messages with IDs from..to.
func (s *stream) expect(from, to int) {
	s.t.Helper()
	for i := from; i <= to; i++ {
		ev := s.next()
		id := strconv.Itoa(i)
		if ev.Type != "message" || ev.LastEventID != id || ev.Data != "e"+id {
			s.t.Fatalf("got %+v, want message %s", ev, id)
		}
	}
}

// end waits for the stream to end and returns the events it still sent.
func (s *stream) end() []ssetest.Event {
	s.t.Helper()
	var rest []ssetest.Event
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				return rest
			}
			rest = append(rest, ev)
		case <-timeout:
			s.t.Fatal("stream did not end in 10s")
			return rest
		}
	}
}

// checkNoLeaks fails the test if goroutines of this package are still
// running 5 s after it ends. Call it first, so it runs last.
func checkNoLeaks(t *testing.T) {
	t.Cleanup(func() {
		var stacks string
		if !poll.Wait(5*time.Second, func() bool {
			buf := make([]byte, 1<<20)
			stacks = string(buf[:runtime.Stack(buf, true)])
			return !strings.Contains(stacks, "esource.(*")
		}) {
			t.Errorf("goroutines of esource still running 5s after the test:\n%s", stacks)
		}
	})
}

// stalledClient opens an event stream over a raw connection with a small
// receive buffer and never reads from it.
func stalledClient(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return conn.(*net.TCPConn)
}
