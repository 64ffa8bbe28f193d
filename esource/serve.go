package esource

import (
	"errors"
	"net/http"
	"sync/atomic"
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
func (es *EventSource) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "esource: an event stream takes GET", http.StatusMethodNotAllowed)
		return
	}
	lastID := r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = r.URL.Query().Get("lastEventId")
	}
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Del("Content-Length")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}

	s := &httpSink{w: w, rc: http.NewResponseController(w), timeout: es.cfg.writeTimeout}
	first := heartbeatLine
	if es.cfg.retry > 0 {
		first = retryLine(es.cfg.retry)
	}
	c := &client{es: es, sink: s}
	if err := s.write([][]byte{first}); err != nil {
		return
	}
	err := c.run(r.Context(), lastID, lastID != "")
	if errors.Is(err, ErrClosed) {
		_ = s.write([][]byte{retryLine(jitter(es.cfg.drainRetry))})
	}
}

// httpSink writes to an HTTP response with a deadline on every write.
type httpSink struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	aborted atomic.Bool
}

func (s *httpSink) write(bufs [][]byte) error {
	// Not every ResponseWriter supports deadlines; streaming works without.
	deadline := time.Now().Add(s.timeout)
	if s.aborted.Load() {
		deadline = time.Now()
	}
	_ = s.rc.SetWriteDeadline(deadline)
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
