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

// ServeHTTP streams the events to the client as text/event-stream, from
// the start the request asks for (see [EventSource.StartOf]): a client
// that sends a Last-Event-ID header, or on its first request a lastEventId
// query parameter, continues right after that event, from the log if it
// holds it, else through the History hook, else after a gap event. Any
// other client starts with the next event published.
func (es *EventSource) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	es.Serve(w, r, es.StartOf(r), nil)
}

// Serve streams the events to the client as text/event-stream, from
// start, with only the events that f lets through (see [Filter]; nil lets
// every event through). It is the one serving entry: ServeHTTP is Serve
// with the request's own start.
//
// The response is always 200 for GET (a browser never reconnects after
// another status); other methods get 405. After shutdown the response is a
// retry line alone, so that the browser comes back later.
//
// The stream ends, cleanly, at the deadline of the request's context, if it
// has one (an expiring credential, say), after what the log held for the
// client then; the browser reconnects with Last-Event-ID and resumes.
//
// With [WithConnTakeover], an HTTP/1.x stream takes its connection over
// from net/http once the headers are sent, and Serve returns while the
// stream goes on (see WithConnTakeover for what middleware must do).
// Otherwise, and always over HTTP/2, Serve returns when the stream ends.
func (es *EventSource) Serve(w http.ResponseWriter, r *http.Request, start Start, f Filter) {
	es.respond(w, r, &clientStream{c: &client{es: es, filter: f, heartbeat: es.cfg.heartbeat}, start: start})
}

// A streamBody is what a stream response carries: one client of an
// EventSource, or the clients of a merged stream's parts (see
// ServeMerged).
type streamBody interface {
	// attach registers the stream's clients, writing to s, and reports
	// false after shutdown. closed, if not nil, reports without blocking
	// that the client closed its connection.
	attach(s sink, closed func() bool) bool
	// begin writes the first frame, which fires the browser's open event:
	// the stream is registered by then, so it misses nothing published in
	// reply. first is the retry line, or a heartbeat.
	begin(first []byte) error
	// run serves the stream until ctx ends, the sink fails, or shutdown.
	run(ctx context.Context) error
	// detach unregisters the stream's clients.
	detach()
}

// respond answers a stream's request with es's configuration: the head,
// then the stream, until it ends. It is the one writer of response heads
// and of the streams' first and last frames.
func (es *EventSource) respond(w http.ResponseWriter, r *http.Request, st streamBody) {
	if r.Context().Err() != nil {
		return // the client is gone already (an HTTP/2 stream reset at once, say)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "esource: an event stream takes GET", http.StatusMethodNotAllowed)
		return
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
	if es.cfg.takeover && r.ProtoMajor == 1 && r.Method == http.MethodGet {
		// Nothing is read after the request, nor written before the head:
		// the buffers that Hijack returns are not needed.
		if conn, _, err := rc.Hijack(); err == nil {
			es.serveConn(w, conn, r, st, first)
			return
		}
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	s := &httpSink{w: w, rc: rc, timeout: es.cfg.writeTimeout, idle: es.cfg.heartbeat == 0 && r.ProtoMajor > 1}
	if !st.attach(s, nil) {
		_ = s.write([][]byte{retryLine(jitter(es.cfg.drainRetry))})
		return
	}
	defer st.detach()
	if err := st.begin(first); err != nil {
		return
	}
	// run ends the stream with a retry line at shutdown; any error is the
	// client's connection failing, and ends it.
	_ = st.run(r.Context())
	// net/http ends the body after this returns: give it the time a write
	// has, not what is left of the last write's deadline.
	_ = rc.SetWriteDeadline(time.Now().Add(es.cfg.writeTimeout))
}

// serveConn writes the response head to a taken over connection and
// serves the stream from a goroutine of its own, owned by es.
func (es *EventSource) serveConn(w http.ResponseWriter, conn net.Conn, r *http.Request, st streamBody, first []byte) {
	// HTTP/1.0 has no chunked encoding: the body ends with the connection.
	chunked := r.ProtoMinor > 0
	s := &connSink{conn: conn, timeout: es.cfg.writeTimeout, chunked: chunked, head: responseHead(w, chunked), vecs: &es.bufs, bytes: &es.bytes}
	var closed func() bool
	if sc, ok := conn.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			closed = func() bool { return closedByPeer(rc) }
		}
	} else {
		s.gather = true // not a socket of its own: a *tls.Conn, say
	}
	if !st.attach(s, closed) {
		s.end(retryLine(jitter(es.cfg.drainRetry)))
		return
	}
	if err := st.begin(first); err != nil {
		st.detach()
		conn.Close()
		return
	}
	// The request's context ends when ServeHTTP returns, and with it what
	// its values stand for (a trace's span, say): the stream's context
	// keeps none of them, and holds nothing of the request's, but its
	// deadline, if any, which still ends the stream.
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if d, ok := r.Context().Deadline(); ok {
		ctx, cancel = context.WithDeadline(ctx, d)
	}
	end := func() {
		s.end(nil)
		cancel()
		st.detach()
	}
	if cs, ok := st.(*clientStream); ok {
		cs.c.end = end // it may move to a fresh goroutine, which ends it
	}
	go func() {
		if err := st.run(ctx); !errors.Is(err, errMoved) {
			end()
		}
	}()
}

// A clientStream is the stream of one client, from its start.
type clientStream struct {
	c     *client
	start Start
}

func (s *clientStream) attach(sk sink, closed func() bool) bool {
	s.c.sink, s.c.closed = sk, closed
	return s.c.es.register(s.c)
}

func (s *clientStream) begin(first []byte) error      { return s.c.write([][]byte{first}) }
func (s *clientStream) run(ctx context.Context) error { return s.c.serve(ctx, s.start) }
func (s *clientStream) detach()                       { s.c.es.unregister(s.c) }

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
	idle     bool // clear the deadline after each write: no heartbeat moves it, and HTTP/2 resets an idle stream at it
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
	err := s.rc.Flush()
	if s.idle && err == nil && !s.aborted.Load() {
		s.deadline = time.Time{}
		_ = s.rc.SetWriteDeadline(s.deadline)
	}
	return err
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
	head     []byte          // the response head, until it is written
	size     []byte          // chunk size line
	vecs     *pool[[][]byte] // where the I/O vector of a write comes from
	bytes    *pool[[]byte]   // where a gathered write's bytes go
	// gather copies a write's pieces into one buffer and writes it at
	// once: for a connection that is not a socket, which has no writev
	// and would make each piece a write (and over TLS a record) of its own.
	gather bool
}

var crlf = []byte("\r\n")

func (s *connSink) write(bufs [][]byte) error {
	if d, ok := nextDeadline(s.deadline, s.timeout, &s.aborted); ok {
		s.deadline = d
		if err := s.conn.SetWriteDeadline(d); err != nil {
			return err
		}
	}
	pooled := s.vecs.get()
	vec := *pooled
	if s.head != nil {
		vec = append(vec, s.head)
		s.head = nil
	}
	if s.chunked {
		n := 0
		for _, b := range bufs {
			n += len(b)
		}
		s.size = strconv.AppendInt(s.size[:0], int64(n), 16)
		s.size = append(s.size, crlf...)
		vec = append(vec, s.size)
	}
	vec = append(vec, bufs...)
	if s.chunked {
		vec = append(vec, crlf)
	}
	var err error
	if s.gather {
		b := s.bytes.get()
		for _, v := range vec {
			*b = append(*b, v...)
		}
		_, err = s.conn.Write(*b)
		*b = (*b)[:0]
		s.bytes.put(b)
	} else {
		consumed := net.Buffers(vec) // WriteTo consumes its receiver
		_, err = consumed.WriteTo(s.conn)
	}
	clear(vec)
	*pooled = vec[:0]
	s.vecs.put(pooled)
	return err
}

// end writes last (if any) and the end of the body, and closes the
// connection.
func (s *connSink) end(last []byte) {
	if last != nil {
		_ = s.write([][]byte{last})
	}
	if s.chunked {
		_ = s.conn.SetWriteDeadline(time.Now().Add(s.timeout))
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
