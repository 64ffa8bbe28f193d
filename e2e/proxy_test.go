package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// A proxy stands in for a load balancer in front of esbridge instances. It
// serves the test pages at /page.html and /snapshot.html and passes any
// other request to the next of its backends in turn, skipping those it
// cannot reach; when it
// reaches none, it drops the connection, which a browser retries.
// Responses are streamed through as they come, and every stream is logged.
// A stream that breaks at the backend breaks at the browser too.
//
// The page and the streams have one origin, the proxy's, as behind a real
// load balancer.
type proxy struct {
	t         *testing.T
	srv       *httptest.Server
	transport *http.Transport

	mu       sync.Mutex
	backends []string // host:port
	next     int      // index in backends of the next to try first
	streams  []*stream
}

// A stream is one request that the proxy passed to a backend.
type stream struct {
	at          time.Time // when the request came
	path        string    // the request's
	backend     string
	lastEventID string // its Last-Event-ID header
	status      int    // the response's
	cancel      context.CancelFunc

	mu   sync.Mutex
	body []byte    // the response body, as passed on
	end  time.Time // when the body ended, cleanly or not; zero until then
}

// startProxy starts a proxy in front of backends (host:port), closed at
// cleanup.
func startProxy(t *testing.T, backends ...string) *proxy {
	t.Helper()
	p := &proxy{
		t:         t,
		backends:  backends,
		transport: &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext},
	}
	p.srv = httptest.NewServer(p)
	t.Cleanup(func() {
		p.cut()
		p.srv.Close()
		if t.Failed() {
			t.Logf("streams through the proxy:\n%s", p.describe())
		}
	})
	return p
}

// pageURL returns the URL of the test page with an EventSource on path.
func (p *proxy) pageURL(path string) string {
	return p.srv.URL + "/page.html?stream=" + url.QueryEscape(path)
}

// setBackends replaces the backends.
func (p *proxy) setBackends(backends ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.backends, p.next = backends, 0
}

// order returns the backends in the order to try them for a request.
func (p *proxy) order() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var o []string
	for i := range p.backends {
		o = append(o, p.backends[(p.next+i)%len(p.backends)])
	}
	if len(p.backends) > 0 {
		p.next = (p.next + 1) % len(p.backends)
	}
	return o
}

// logged returns the streams so far, oldest first.
func (p *proxy) logged() []*stream {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*stream(nil), p.streams...)
}

// cut breaks every stream, as a network failure would.
func (p *proxy) cut() {
	for _, s := range p.logged() {
		s.cancel()
	}
}

// ServeHTTP serves the test page, or passes the request on to a backend.
func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/page.html" || r.URL.Path == "/snapshot.html" {
		http.ServeFile(w, r, "browser"+r.URL.Path)
		return
	}
	at := time.Now()
	for _, backend := range p.order() {
		ctx, cancel := context.WithCancel(r.Context())
		req := r.Clone(ctx)
		req.URL.Scheme, req.URL.Host, req.Host, req.RequestURI = "http", backend, backend, ""
		req.Header.Del("Connection")
		resp, err := p.transport.RoundTrip(req)
		if err != nil {
			cancel()
			continue // a GET may go to the next backend
		}
		s := &stream{at: at, path: r.URL.Path, backend: backend, lastEventID: r.Header.Get("Last-Event-ID"), status: resp.StatusCode, cancel: cancel}
		p.mu.Lock()
		p.streams = append(p.streams, s)
		p.mu.Unlock()
		s.relay(w, resp)
		return
	}
	// No backend: a network error for the browser, which retries.
	panic(http.ErrAbortHandler)
}

// relay passes resp on to w as it comes, and records it in s. A body that
// breaks breaks the connection to the client.
func (s *stream) relay(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	defer s.cancel()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	rc.Flush()
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				s.finish(nil)
				return // the client went away
			}
			rc.Flush()
		}
		if err != nil {
			s.finish(buf[:n])
			if err != io.EOF {
				panic(http.ErrAbortHandler)
			}
			return
		}
		s.add(buf[:n])
	}
}

// add records b as passed on.
func (s *stream) add(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body = append(s.body, b...)
}

// finish records the last bytes passed on, b, and the end of the body.
func (s *stream) finish(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body = append(s.body, b...)
	s.end = time.Now()
}

// state returns the body so far and when it ended (zero if it goes on).
func (s *stream) state() (body string, end time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.body), s.end
}

// describe lists the streams, for failure messages.
func (p *proxy) describe() string {
	var b strings.Builder
	for i, s := range p.logged() {
		body, end := s.state()
		fmt.Fprintf(&b, "#%d at %s %s to %s, Last-Event-ID %q: status %d, %d bytes, ended %s; ends with %q\n",
			i, s.at.Format("15:04:05.000"), s.path, s.backend, s.lastEventID, s.status, len(body), end.Format("15:04:05.000"), body[max(0, len(body)-80):])
	}
	return b.String()
}
