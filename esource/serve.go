package esource

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// ServeHTTP streams the events to the client as text/event-stream.
//
// A client that sends a Last-Event-ID header, or on its first request a
// lastEventId query parameter (the header wins), continues right after that
// event: from the log if it holds it, else through the History hook, else
// after a gap event. Any other client starts with the next event published.
// The response is always 200 for GET (a browser never reconnects after
// another status); other methods get 405. After shutdown the response is a
// retry line alone, so that the browser comes back later.
//
// On HTTP/1.x, once the headers are sent, the stream takes the connection
// over from net/http (see http.Hijacker) and is served by a lean goroutine
// of the EventSource, which frees net/http's buffers: an idle stream costs
// a few kilobytes. A client that goes away is then noticed within seconds
// over TCP on Unix systems, where the goroutine peeks at its connection
// every few seconds, and otherwise at the next write, which the heartbeat
// makes happen. HTTP/2 streams, and
// ResponseWriters that cannot be hijacked, are served through the
// ResponseWriter by the handler itself.
//
// The stream ends, cleanly, at the deadline of the request's context, if it
// has one (an expiring credential, say), after what the log held for the
// client then; the browser reconnects with Last-Event-ID and resumes.
func (es *EventSource) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	es.serve(w, r, nil, nil)
}

// ServeFiltered serves the event stream as ServeHTTP does, with only the
// events that f lets through (see Filter); nil lets every event through.
func (es *EventSource) ServeFiltered(w http.ResponseWriter, r *http.Request, f Filter) {
	es.serve(w, r, f, nil)
}

// ServeGap serves the stream as ServeFiltered does to a client without
// Last-Event-ID, but begins it with the gap event of g, whose ID is that of
// the newest event in the log (the position from which the stream goes
// on): for a request that asked for events the server will not send, such
// as a start in the past that a handler refused. The request's
// Last-Event-ID, if any, is not read.
func (es *EventSource) ServeGap(w http.ResponseWriter, r *http.Request, f Filter, g Gap) {
	es.serve(w, r, f, &g)
}

// serve serves the stream with the events f lets through; a client with
// gap set is sent it first, and starts with the next event published.
func (es *EventSource) serve(w http.ResponseWriter, r *http.Request, f Filter, gap *Gap) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "esource: an event stream takes GET", http.StatusMethodNotAllowed)
		return
	}
	lastID := ""
	if gap == nil {
		lastID = r.Header.Get("Last-Event-ID")
		if lastID == "" {
			lastID = r.URL.Query().Get("lastEventId")
		}
	}
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Del("Content-Length")
	first := heartbeatLine
	if es.cfg.retry > 0 {
		first = retryLine(es.cfg.retry)
	}

	rc := http.NewResponseController(w)
	if r.ProtoMajor == 1 && r.Method == http.MethodGet {
		// Nothing is read after the request, nor written before the head:
		// the buffers that Hijack returns are not needed.
		if conn, _, err := rc.Hijack(); err == nil {
			es.serveConn(w, conn, r, lastID, first, f, gap)
			return
		}
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	s := &httpSink{w: w, rc: rc, timeout: es.cfg.writeTimeout}
	c := &client{es: es, sink: s, filter: f, gap: gap}
	if !es.register(c) {
		_ = s.write([][]byte{retryLine(jitter(es.cfg.drainRetry))})
		return
	}
	defer es.unregister(c)
	// The first frame fires the browser's open event: the client is
	// registered by then, so it misses nothing published in reply.
	if err := c.write([][]byte{first}); err != nil {
		return
	}
	// serve ends the stream with a retry line at shutdown; any error is
	// the client's connection failing, and ends it.
	_ = c.serve(r.Context(), lastID, lastID != "")
}

// serveConn writes the response head to a hijacked connection and serves
// the stream from a goroutine of its own, owned by es.
func (es *EventSource) serveConn(w http.ResponseWriter, conn net.Conn, r *http.Request, lastID string, first []byte, f Filter, gap *Gap) {
	// HTTP/1.0 has no chunked encoding: the body ends with the connection.
	chunked := r.ProtoMinor > 0
	s := &connSink{conn: conn, timeout: es.cfg.writeTimeout, chunked: chunked, head: responseHead(w, chunked)}
	c := &client{es: es, sink: s, filter: f, gap: gap}
	if sc, ok := conn.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			c.closed = func() bool { return closedByPeer(rc) }
		}
	}
	if !es.register(c) {
		s.end(retryLine(jitter(es.cfg.drainRetry)))
		return
	}
	if err := c.write([][]byte{first}); err != nil {
		es.unregister(c)
		conn.Close()
		return
	}
	// The request's context ends when ServeHTTP returns; its deadline, if
	// any, still ends the stream.
	ctx, cancel := context.WithoutCancel(r.Context()), context.CancelFunc(func() {})
	if d, ok := r.Context().Deadline(); ok {
		ctx, cancel = context.WithDeadline(ctx, d)
	}
	go func() {
		defer es.unregister(c)
		defer cancel()
		_ = c.serve(ctx, lastID, lastID != "")
		s.end(nil)
	}()
}

// responseHead returns the head of a 200 response with w's headers: the
// event stream's, and any other set before ServeHTTP, such as CORS.
func responseHead(w http.ResponseWriter, chunked bool) []byte {
	h := w.Header()
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	if chunked {
		h.Set("Transfer-Encoding", "chunked")
	} else {
		h.Set("Connection", "close")
	}
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 200 OK\r\n")
	_ = h.Write(&b) // sorted, with newlines in values made spaces
	b.WriteString("\r\n")
	return b.Bytes()
}

// httpSink writes to an HTTP response with a deadline on every write.
type httpSink struct {
	w        http.ResponseWriter
	rc       *http.ResponseController
	timeout  time.Duration
	deadline time.Time
	aborted  atomic.Bool
}

func (s *httpSink) write(bufs [][]byte) error {
	if d, ok := nextDeadline(s.deadline, s.timeout, &s.aborted); ok {
		s.deadline = d
		// Not every ResponseWriter supports deadlines; streaming works without.
		_ = s.rc.SetWriteDeadline(d)
	}
	for _, b := range bufs {
		if _, err := s.w.Write(b); err != nil {
			return err
		}
	}
	return s.rc.Flush()
}

func (s *httpSink) abort() {
	s.aborted.Store(true)
	_ = s.rc.SetWriteDeadline(time.Now())
}

// nextDeadline returns the deadline the next write should have, and
// whether it differs from the current one enough to be set: moving a
// deadline costs, so it moves when an eighth of the timeout has passed.
func nextDeadline(current time.Time, timeout time.Duration, aborted *atomic.Bool) (time.Time, bool) {
	now := time.Now()
	if aborted.Load() {
		return now, true
	}
	if current.Sub(now) > timeout-timeout/8 {
		return current, false
	}
	return now.Add(timeout), true
}

// connSink writes to a hijacked HTTP/1.x connection, in chunks when the
// client speaks HTTP/1.1, each write one system call.
type connSink struct {
	conn     net.Conn
	timeout  time.Duration
	deadline time.Time
	aborted  atomic.Bool
	chunked  bool
	head     []byte // the response head, until it is written
	size     []byte // chunk size line
	vec      net.Buffers
}

var crlf = []byte("\r\n")

func (s *connSink) write(bufs [][]byte) error {
	if d, ok := nextDeadline(s.deadline, s.timeout, &s.aborted); ok {
		s.deadline = d
		if err := s.conn.SetWriteDeadline(d); err != nil {
			return err
		}
	}
	s.vec = s.vec[:0]
	if s.head != nil {
		s.vec = append(s.vec, s.head)
		s.head = nil
	}
	if s.chunked {
		n := 0
		for _, b := range bufs {
			n += len(b)
		}
		s.size = strconv.AppendInt(s.size[:0], int64(n), 16)
		s.size = append(s.size, crlf...)
		s.vec = append(s.vec, s.size)
	}
	s.vec = append(s.vec, bufs...)
	if s.chunked {
		s.vec = append(s.vec, crlf)
	}
	vec := s.vec // WriteTo consumes its receiver
	_, err := vec.WriteTo(s.conn)
	clear(s.vec)
	return err
}

// end writes last (if any) and the end of the body, and closes the
// connection.
func (s *connSink) end(last []byte) {
	if last != nil {
		_ = s.write([][]byte{last})
	}
	if s.chunked {
		_, _ = s.conn.Write([]byte("0\r\n\r\n"))
	}
	s.conn.Close()
}

// watchGone reads the connection, where a client sends nothing after its
// request, to learn that it closed.
func (s *connSink) watchGone(cancel func()) (stop func() bool) {
	var gone atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		for {
			if _, err := s.conn.Read(buf); err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					gone.Store(true)
					cancel()
				}
				return
			}
		}
	}()
	return func() bool {
		_ = s.conn.SetReadDeadline(time.Now())
		<-done
		_ = s.conn.SetReadDeadline(time.Time{})
		return gone.Load()
	}
}

func (s *connSink) abort() {
	s.aborted.Store(true)
	_ = s.conn.SetWriteDeadline(time.Now())
}
