package esource

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esbridge/esbridge/internal/poll"
)

func TestNewRejectsBadOptions(t *testing.T) {
	for _, opt := range []Option{
		WithBacklog(0), WithBacklogBytes(-1), WithHeartbeat(-1), WithRetry(-1),
		WithWriteTimeout(0), WithDrainRetry(0),
	} {
		if _, err := New(opt); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("New: %v, want ErrInvalidOption", err)
		}
	}
}

func TestServeHeadersAndFirstFrame(t *testing.T) {
	checkNoLeaks(t)
	es := newSource(t, WithRetry(1500*time.Millisecond))
	srv := serve(t, es)
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	for name, want := range map[string]string{
		"Content-Type":      "text/event-stream; charset=utf-8",
		"Cache-Control":     "no-cache",
		"X-Accel-Buffering": "no",
		"Content-Length":    "",
	} {
		if got := resp.Header.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	// The first frame arrives before any event, so the browser opens.
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(resp.Body, buf, len("retry: 1500\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); got != "retry: 1500\n\n" {
		t.Errorf("first frame %q, want %q", got, "retry: 1500\n\n")
	}
}

func TestServeMethods(t *testing.T) {
	es := newSource(t)
	srv := serve(t, es)
	resp, err := http.Post(srv.URL, "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: status %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	resp, err = http.Head(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ContentType {
		t.Errorf("HEAD: status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

func TestLiveDelivery(t *testing.T) {
	checkNoLeaks(t)
	es := newSource(t)
	srv := serve(t, es)
	publishN(t, es, 1, 3) // before connecting: not sent to a new client
	s := connect(t, srv.Client(), srv.URL, "")
	waitClients(t, es, 1)
	publishN(t, es, 4, 6)
	s.expect(4, 6)
	if err := es.Publish(Event{Type: "note", Data: map[string]string{"k": "v"}}); err != nil {
		t.Fatal(err)
	}
	if ev := s.next(); ev.Type != "note" || ev.Data != `{"k":"v"}` || ev.LastEventID != "6" {
		t.Errorf("got %+v", ev)
	}
}

func TestPublishRejectsInvalidEvent(t *testing.T) {
	es := newSource(t)
	if err := es.Publish(Event{ID: "a\nb"}); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("Publish: %v, want ErrInvalidEvent", err)
	}
}

func TestResumeFromLog(t *testing.T) {
	checkNoLeaks(t)
	es := newSource(t)
	srv := serve(t, es)
	publishN(t, es, 1, 10)

	s := connect(t, srv.Client(), srv.URL, "4")
	s.expect(5, 10)
	publishN(t, es, 11, 12)
	s.expect(11, 12)

	// A first request passes the ID in the URL.
	q := connect(t, srv.Client(), srv.URL+"?lastEventId=9", "")
	q.expect(10, 12)

	// When both are present, the header wins: automatic reconnects reuse
	// the first URL.
	h := connect(t, srv.Client(), srv.URL+"?lastEventId=2", "11")
	publishN(t, es, 13, 13)
	h.expect(12, 13)
}

func TestUnknownIDWithoutHistoryIsGap(t *testing.T) {
	checkNoLeaks(t)
	es := newSource(t, WithBacklog(4))
	srv := serve(t, es)
	publishN(t, es, 1, 10) // the log holds 7..10

	for _, lastID := range []string{"3", "garbage\u00e9"} {
		s := connect(t, srv.Client(), srv.URL, lastID)
		ev := s.next()
		var gap Gap
		if err := json.Unmarshal([]byte(ev.Data), &gap); err != nil || ev.Type != GapType {
			t.Fatalf("first event %+v, want a gap (%v)", ev, err)
		}
		if gap.Reason != "unknown-id" || gap.LastEventID != lastID {
			t.Errorf("gap %+v, want reason unknown-id for %q", gap, lastID)
		}
		// The stream goes on live, and the browser now holds the newest ID.
		if ev.LastEventID != "10" {
			t.Errorf("gap moved the last event ID to %q, want 10", ev.LastEventID)
		}
	}
	publishN(t, es, 11, 11)
}

func TestSlowClientWithoutHistoryIsGap(t *testing.T) {
	checkNoLeaks(t)
	es := newSource(t, WithBacklog(4))
	events, err := es.Tee(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		waitClients(t, es, 1)
		publishN(t, es, 1, 1)
	}()
	var got []Event
	for ev := range events {
		got = append(got, ev)
		if ev.ID == "1" {
			// While the client is busy, the log moves on without it.
			publishN(t, es, 2, 12)
		}
		if ev.ID == "12" {
			break
		}
	}
	if len(got) != 6 || got[1].Type != GapType {
		t.Fatalf("got %+v, want event 1, a gap, then 9..12", got)
	}
	var gap Gap
	if err := json.Unmarshal([]byte(got[1].Data.(string)), &gap); err != nil {
		t.Fatal(err)
	}
	if gap.Reason != "slow" || gap.LastEventID != "1" || gap.Missed != 7 || got[1].ID != "8" {
		t.Errorf("gap %+v with ID %q, want slow after 1, 7 missed, ID 8", gap, got[1].ID)
	}
	for i, ev := range got[2:] {
		if want := strconv.Itoa(9 + i); ev.ID != want || ev.Data != "e"+want {
			t.Errorf("after the gap got %+v, want %s", ev, want)
		}
	}
}

func TestBacklogBytesBound(t *testing.T) {
	es := newSource(t, WithBacklog(1000), WithBacklogBytes(100))
	publishN(t, es, 1, 50) // each event is 16-18 bytes on the wire
	es.mu.RLock()
	held, size := es.next-es.head, es.size
	es.mu.RUnlock()
	if size > 100 || held < 5 {
		t.Errorf("log holds %d events, %d bytes; want at most 100 bytes", held, size)
	}
	if err := es.Publish(Event{ID: "big", Data: strings.Repeat("x", 500)}); err != nil {
		t.Fatal(err)
	}
	es.mu.RLock()
	held = es.next - es.head
	es.mu.RUnlock()
	if held != 1 {
		t.Errorf("after an event over the cap the log holds %d events, want it alone", held)
	}
}

func TestSetBacklog(t *testing.T) {
	es := newSource(t, WithBacklog(10))
	publishN(t, es, 1, 10)
	if err := es.SetBacklog(3); err != nil {
		t.Fatal(err)
	}
	events, err := es.Tee(t.Context(), "7")
	if err != nil {
		t.Fatal(err)
	}
	for ev := range events {
		if ev.Type != GapType {
			t.Fatalf("resume from 7 with a backlog of 3 (8..10): got %+v, want a gap", ev)
		}
		break
	}
	events, _ = es.Tee(t.Context(), "8")
	for ev := range events {
		if ev.ID != "9" {
			t.Fatalf("resume from 8: got %+v, want 9", ev)
		}
		break
	}
	if err := es.SetBacklog(0); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("SetBacklog(0): %v, want ErrInvalidOption", err)
	}
}

func TestShutdown(t *testing.T) {
	checkNoLeaks(t)
	es, err := New(WithDrainRetry(200 * time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, es)
	var streams []*stream
	for range 3 {
		streams = append(streams, connect(t, srv.Client(), srv.URL, ""))
	}
	waitClients(t, es, 3)
	publishN(t, es, 1, 5)
	if err := es.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for _, s := range streams {
		// Everything published before Shutdown arrives, then a retry
		// line, then the end of the response.
		rest := s.end()
		if len(rest) != 5 || rest[4].LastEventID != "5" {
			t.Errorf("after Shutdown the stream had %+v, want events 1..5", rest)
		}
		if r := s.parser.Retry; r < 100 || r >= 300 {
			t.Errorf("retry %d ms, want 200 ms ±50%%", r)
		}
	}
	if err := es.Publish(Event{Data: "late"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Shutdown: %v, want ErrClosed", err)
	}
	if _, err := es.Tee(t.Context(), ""); !errors.Is(err, ErrClosed) {
		t.Errorf("Tee after Shutdown: %v, want ErrClosed", err)
	}
	if err := es.SetBacklog(5); !errors.Is(err, ErrClosed) {
		t.Errorf("SetBacklog after Shutdown: %v, want ErrClosed", err)
	}
	if err := es.Shutdown(t.Context()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	if err := es.Close(); err != nil {
		t.Errorf("Close after Shutdown: %v", err)
	}
	// A browser arriving now is told to come back, not failed for good.
	late := connect(t, srv.Client(), srv.URL, "")
	if rest := late.end(); len(rest) != 0 || late.parser.Retry <= 0 {
		t.Errorf("request after Shutdown: events %+v, retry %d", rest, late.parser.Retry)
	}
}

func TestShutdownCutsStalledClients(t *testing.T) {
	checkNoLeaks(t)
	es, err := New()
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, es)
	conn := stalledClient(t, srv.Listener.Addr().String())
	defer conn.Close()
	waitClients(t, es, 1)
	big := strings.Repeat("x", 64<<10)
	for range 100 { // far more than the socket buffers hold
		if err := es.Publish(Event{Data: big}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := es.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with a stalled client: %v, want DeadlineExceeded", err)
	}
	waitClients(t, es, 0) // its write was cut short
}

func TestCloseDoesNotWait(t *testing.T) {
	checkNoLeaks(t)
	es, err := New()
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, es)
	s := connect(t, srv.Client(), srv.URL, "")
	waitClients(t, es, 1)
	publishN(t, es, 1, 2)
	if err := es.Close(); err != nil {
		t.Fatal(err)
	}
	if rest := s.end(); len(rest) != 2 {
		t.Errorf("after Close the stream had %+v, want events 1..2", rest)
	}
	if err := es.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestTee(t *testing.T) {
	checkNoLeaks(t)
	es := newSource(t)
	publishN(t, es, 1, 5)
	events, err := es.Tee(t.Context(), "2")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		waitClients(t, es, 1)
		publishN(t, es, 6, 7)
		es.Publish(Event{ID: "8"}) // an ID-only event reaches Tee too
	})
	var ids []string
	for ev := range events {
		ids = append(ids, ev.ID)
		if ev.ID == "8" {
			if ev.Data != nil {
				t.Errorf("ID-only event arrived with data %q", ev.Data)
			}
			break
		}
	}
	wg.Wait()
	if got := strings.Join(ids, ","); got != "3,4,5,6,7,8" {
		t.Errorf("Tee after 2 gave %s, want 3,4,5,6,7,8", got)
	}
	waitClients(t, es, 0) // breaking the loop ends the subscription
}

// waitClients waits until es serves n clients.
func waitClients(t testing.TB, es *EventSource, n int) {
	t.Helper()
	if !poll.Wait(10*time.Second, func() bool { return es.Clients() == n }) {
		t.Fatalf("%d clients after 10s, want %d", es.Clients(), n)
	}
}

// TestHTTP1Framing checks the response esource writes itself on a taken
// over HTTP/1.x connection: headers set before ServeHTTP (CORS, say) are
// kept, HTTP/1.1 gets chunks and a clean end, HTTP/1.0 a body that ends
// with the connection.
func TestHTTP1Framing(t *testing.T) {
	checkNoLeaks(t)
	es := newSource(t, WithRetry(time.Second))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Allow-Headers", "Last-Event-ID")
		es.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	for _, proto := range []string{"HTTP/1.1", "HTTP/1.0"} {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "GET / %s\r\nHost: x\r\n\r\n", proto)
		br := bufio.NewReader(conn)
		req, _ := http.NewRequest(http.MethodGet, "/", nil)
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
			resp.Header.Get("Content-Type") != ContentType || resp.Header.Get("Date") == "" {
			t.Errorf("%s: status %d, header %v", proto, resp.StatusCode, resp.Header)
		}
		chunked := len(resp.TransferEncoding) == 1 && resp.TransferEncoding[0] == "chunked"
		if chunked != (proto == "HTTP/1.1") || resp.ContentLength != -1 {
			t.Errorf("%s: transfer encoding %v, length %d", proto, resp.TransferEncoding, resp.ContentLength)
		}
		waitClients(t, es, 1)
		publishN(t, es, 1, 2)
		want := "retry: 1000\n\nid: 1\ndata: e1\n\nid: 2\ndata: e2\n\n"
		buf := make([]byte, len(want))
		if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != want {
			t.Errorf("%s: body %q, %v", proto, buf, err)
		}
		es.Close()
		rest, err := io.ReadAll(resp.Body)
		if err != nil || !strings.HasPrefix(string(rest), "retry: ") {
			t.Errorf("%s: after Close the body had %q, %v; want a retry line and a clean end", proto, rest, err)
		}
		es = newSource(t, WithRetry(time.Second))
	}
}

// TestServeGap: a client served with a Start with a Gap gets the gap first, with the
// newest ID of the log, then the live stream; its Last-Event-ID is not read.
func TestServeGap(t *testing.T) {
	checkNoLeaks(t)
	es := newSource(t, WithBacklog(4))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		es.Serve(w, r, Start{Gap: &Gap{Reason: "refused", Message: "not from then"}}, nil)
	}))
	t.Cleanup(srv.Close)
	publishN(t, es, 1, 10)

	s := connect(t, srv.Client(), srv.URL, "8")
	ev := s.next()
	var gap Gap
	if err := json.Unmarshal([]byte(ev.Data), &gap); err != nil || ev.Type != GapType {
		t.Fatalf("first event %+v, want a gap (%v)", ev, err)
	}
	if gap.Reason != "refused" || gap.Message != "not from then" || gap.LastEventID != "" {
		t.Errorf("gap %+v, want reason refused without a last event ID", gap)
	}
	if ev.LastEventID != "10" {
		t.Errorf("gap moved the last event ID to %q, want 10", ev.LastEventID)
	}
	publishN(t, es, 11, 12)
	s.expect(11, 12)
	if got := es.Stats().Gaps["refused"]; got != 1 {
		t.Errorf("Stats().Gaps[refused] = %d, want 1", got)
	}
}

// TestClosedConnectionNoticed: a client that closes its HTTP/1.1
// connection while nothing is sent to it is gone from the EventSource
// within a probe interval, not at its next heartbeat an hour later, so
// that its place (a limit's, say) is freed; a client still connected is
// not taken for gone, and gets the next event.
func TestClosedConnectionNoticed(t *testing.T) {
	es := newSource(t, WithHeartbeat(20*time.Second), WithConnTakeover())
	es.cfg.probe = 20 * time.Millisecond
	srv := httptest.NewServer(es)
	defer srv.Close()
	dial := func() (net.Conn, *bufio.Reader) {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: esource\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
			t.Fatalf("status line %q, %v", line, err)
		}
		return conn, br
	}
	stays, br := dial()
	defer stays.Close()
	leaves, _ := dial()
	waitClients(t, es, 2)
	leaves.Close()
	if !poll.Wait(5*time.Second, func() bool { return es.Clients() == 1 }) {
		t.Fatalf("%d clients 5 s after one closed its connection, want 1", es.Clients())
	}
	time.Sleep(10 * es.cfg.probe) // probes pass: none may take the other client for gone
	if err := es.Publish(Event{ID: "1", Data: "after"}); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("the client still connected: %v", err)
		}
		if line == "data: after\n" {
			break
		}
	}
}

// TestConnTakeover: with WithConnTakeover an HTTP/1.1 stream goes on after
// ServeHTTP returned, on the connection it took over; without it,
// ServeHTTP returns only when the stream ends.
func TestConnTakeover(t *testing.T) {
	for _, takeover := range []bool{false, true} {
		t.Run(fmt.Sprint("takeover=", takeover), func(t *testing.T) {
			checkNoLeaks(t)
			var opts []Option
			if takeover {
				opts = append(opts, WithConnTakeover())
			}
			es := newSource(t, opts...)
			var returned atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				es.ServeHTTP(w, r)
				returned.Add(1)
			}))
			t.Cleanup(srv.Close)
			s := connect(t, srv.Client(), srv.URL, "")
			waitClients(t, es, 1)
			publishN(t, es, 1, 2)
			s.expect(1, 2)
			if got, want := returned.Load() == 1, takeover; got != want {
				t.Errorf("ServeHTTP returned while streaming: %v, want %v", got, want)
			}
		})
	}
}

// TestIdleStreams: a stream on a taken over connection that waits idle
// moves to a fresh goroutine whenever it goes idle (see client.loop).
// Through the moves each stream keeps one goroutine, gets its heartbeats,
// is found gone when its client closes, and gets the next event.
func TestIdleStreams(t *testing.T) {
	checkNoLeaks(t)
	const heartbeat = 100 * time.Millisecond
	es := newSource(t, WithHeartbeat(heartbeat), WithConnTakeover())
	es.cfg.probe = 50 * time.Millisecond
	srv := httptest.NewServer(es)
	defer srv.Close()

	const n = 20
	type idle struct {
		conn  net.Conn
		beats atomic.Int32
		data  chan string
	}
	streams := make([]*idle, n)
	for i := range streams {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: esource\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		s := &idle{conn: conn, data: make(chan string, 1)}
		streams[i] = s
		go func() {
			br := bufio.NewReader(conn)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				switch {
				case line == ":\n":
					s.beats.Add(1)
				case strings.HasPrefix(line, "data: "):
					s.data <- strings.TrimSpace(strings.TrimPrefix(line, "data: "))
				}
			}
		}()
	}
	waitClients(t, es, n)
	poll.Until(t, 10*time.Second, "5 heartbeats on every stream", func() bool {
		for _, s := range streams {
			if s.beats.Load() < 5 {
				return false
			}
		}
		return true
	})
	poll.Until(t, 5*time.Second, fmt.Sprintf("one goroutine of esource per stream (%d)", n), func() bool {
		buf := make([]byte, 1<<20)
		streaming := 0
		for g := range strings.SplitSeq(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "esource.(*client)") {
				streaming++
			}
		}
		return streaming == n
	})

	if err := es.Publish(Event{ID: "1", Data: "after"}); err != nil {
		t.Fatal(err)
	}
	for i, s := range streams {
		select {
		case got := <-s.data:
			if got != "after" {
				t.Fatalf("stream %d got %q, want after", i, got)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("stream %d: no event in 10 s", i)
		}
	}
	for _, s := range streams[:n/2] {
		s.conn.Close()
	}
	poll.Until(t, 5*time.Second, "the closed streams gone", func() bool { return es.Clients() == n-n/2 })
}

// TestConnTakeoverTLS: over TLS a taken over HTTP/1.1 connection is a
// *tls.Conn, which has no writev: each batch is gathered into one write
// (one TLS record, not one per piece), and the stream reads as any other.
func TestConnTakeoverTLS(t *testing.T) {
	checkNoLeaks(t)
	es := newSource(t, WithConnTakeover())
	srv := httptest.NewUnstartedServer(es)
	srv.StartTLS() // HTTP/1.1: EnableHTTP2 is not set
	t.Cleanup(srv.Close)
	s := connect(t, srv.Client(), srv.URL, "")
	if s.resp.ProtoMajor != 1 {
		t.Fatalf("protocol %s, want HTTP/1.1", s.resp.Proto)
	}
	waitClients(t, es, 1)
	publishN(t, es, 1, 300)
	s.expect(1, 300)
}
