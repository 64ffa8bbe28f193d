package limit

import (
	"bufio"
	"context"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esbridge/esbridge/esource"
	"github.com/esbridge/esbridge/internal/poll"
)

const waitFor = 20 * time.Second

// A limited stream server: an esource.EventSource at /s behind a Limiter,
// and /other, which is not a stream.
type server struct {
	t   *testing.T
	srv *httptest.Server
	lim *Limiter
	es  *esource.EventSource

	mu      sync.Mutex
	refused []string // reasons passed to OnRefused
}

func newServer(t *testing.T, h2 bool, cfg Config) *server {
	t.Helper()
	s := &server{t: t}
	es, err := esource.New(esource.WithHeartbeat(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	s.es = es
	cfg.IsStream = func(r *http.Request) bool { return r.URL.Path == "/s" }
	cfg.OnRefused = func(reason string) {
		s.mu.Lock()
		s.refused = append(s.refused, reason)
		s.mu.Unlock()
	}
	if s.lim, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/s", es)
	mux.HandleFunc("/other", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	s.srv = httptest.NewUnstartedServer(s.lim.Handler(mux))
	if h2 {
		s.srv.EnableHTTP2 = true
		s.srv.StartTLS()
	} else {
		s.srv.Start()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		es.Shutdown(ctx)
		s.srv.Close()
	})
	return s
}

func (s *server) reasons() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.refused...)
}

// A stream is an open response to GET /s.
type stream struct {
	resp   *http.Response
	cancel context.CancelFunc
	r      *bufio.Reader
}

// get requests path with an X-Forwarded-For header, if xff is not empty.
func (s *server) get(path, xff string) *stream {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s.t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.srv.URL+path, nil)
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("GET %s: status %d, want 200", path, resp.StatusCode)
	}
	return &stream{resp: resp, cancel: cancel, r: bufio.NewReader(resp.Body)}
}

// open opens a stream and checks that it is served: its first line is the
// retry line of esource's, 3 s, which a refusal never sends.
func (s *server) open(xff string) *stream {
	s.t.Helper()
	st := s.get("/s", xff)
	if line := st.line(s.t); line != "retry: 3000" {
		s.t.Fatalf("stream for %q: first line %q, want esource's retry: 3000", xff, line)
	}
	return st
}

var refusalRE = regexp.MustCompile(`^retry: (\d+)\n\n$`)

// expectRefused opens a stream and checks that it is refused: an event
// stream of a retry line of 5 to 15 s, which ends.
func (s *server) expectRefused(xff string) {
	s.t.Helper()
	st := s.get("/s", xff)
	defer st.close()
	// A stream served instead would not end: end it after a while.
	defer time.AfterFunc(waitFor, st.cancel).Stop()
	if ct, _, _ := mime.ParseMediaType(st.resp.Header.Get("Content-Type")); ct != "text/event-stream" {
		s.t.Errorf("refused stream: Content-Type %q, want text/event-stream", st.resp.Header.Get("Content-Type"))
	}
	body, err := io.ReadAll(st.r)
	if err != nil {
		s.t.Fatalf("refused stream for %q: %v after %q, want its end", xff, err, body)
	}
	m := refusalRE.FindSubmatch(body)
	if m == nil {
		s.t.Fatalf("refused stream for %q: body %q, want a retry line alone", xff, body)
	}
	if ms, _ := strconv.Atoi(string(m[1])); ms < 5000 || ms > 15000 {
		s.t.Errorf("refused stream: retry %d ms, want 5000 to 15000", ms)
	}
}

func (st *stream) line(t *testing.T) string {
	t.Helper()
	line, err := st.r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the stream: %v after %q", err, line)
	}
	return strings.TrimSuffix(line, "\n")
}

func (st *stream) close() {
	st.cancel()
	st.resp.Body.Close()
}

// waitOpen waits until the limiter counts n streams.
func (s *server) waitOpen(n int) {
	s.t.Helper()
	if !poll.Wait(waitFor, func() bool { return s.lim.Open() == n }) {
		s.t.Fatalf("%d streams open after %v, want %d", s.lim.Open(), waitFor, n)
	}
}

// Over HTTP/1.1, where esource takes the connection over, and over HTTP/2,
// where it serves the stream from its handler, a stream holds its place
// until it ends: the one over the limit is refused, and once a stream ends
// another is let in.
func TestLimits(t *testing.T) {
	t.Parallel()
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, proto == "HTTP/2.0", Config{MaxClients: 3, MaxPerIP: 2,
				TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})

			a1 := s.open("192.0.2.1")
			if got := a1.resp.Proto; got != proto {
				t.Fatalf("served over %s, want %s", got, proto)
			}
			s.open("192.0.2.1")
			s.expectRefused("192.0.2.1")
			b1 := s.open("192.0.2.2")
			s.expectRefused("192.0.2.3")
			// Requests that are not streams are not counted.
			if resp, err := s.srv.Client().Get(s.srv.URL + "/other"); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /other over the limit: %v %v, want 200", resp, err)
			} else {
				resp.Body.Close()
			}
			if got, want := s.reasons(), []string{ReasonMaxPerIP, ReasonMaxClients}; !slices.Equal(got, want) {
				t.Errorf("OnRefused got %q, want %q", got, want)
			}

			// A stream that ends frees its place, and its address's.
			a1.close()
			s.waitOpen(2)
			s.open("192.0.2.1")
			b1.close()
			s.waitOpen(2)
			s.open("192.0.2.3")
			s.expectRefused("192.0.2.4")

			// Streams ended by the server free theirs too.
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			if err := s.es.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			s.waitOpen(0)
		})
	}
}

// Without trusted proxies, X-Forwarded-For is not believed: every stream
// of the test comes from 127.0.0.1.
func TestLimitsUntrusted(t *testing.T) {
	t.Parallel()
	s := newServer(t, false, Config{MaxPerIP: 1})
	s.open("192.0.2.1")
	s.expectRefused("192.0.2.2")
	if got, want := s.reasons(), []string{ReasonMaxPerIP}; !slices.Equal(got, want) {
		t.Errorf("OnRefused got %q, want %q", got, want)
	}
}

// IPv6 clients are counted by their /64, or the prefix configured;
// IPv4 clients by their address.
func TestLimitsIPv6Prefix(t *testing.T) {
	t.Parallel()
	proxy := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	t.Run("default-64", func(t *testing.T) {
		t.Parallel()
		s := newServer(t, false, Config{MaxPerIP: 1, TrustedProxies: proxy})
		s.open("2001:db8:1:2::1")
		s.expectRefused("2001:db8:1:2:ffff:ffff:ffff:ffff") // the same /64
		s.open("2001:db8:1:3::1")                           // another /64
		s.open("192.0.2.1")
		s.open("192.0.2.2") // IPv4: per address
		s.expectRefused("192.0.2.1")
	})
	t.Run("48", func(t *testing.T) {
		t.Parallel()
		s := newServer(t, false, Config{MaxPerIP: 1, IPv6Prefix: 48, TrustedProxies: proxy})
		s.open("2001:db8:1:2::1")
		s.expectRefused("2001:db8:1:3::1") // the same /48
		s.open("2001:db8:2::1")
	})
	t.Run("128", func(t *testing.T) {
		t.Parallel()
		s := newServer(t, false, Config{MaxPerIP: 1, IPv6Prefix: 128, TrustedProxies: proxy})
		s.open("2001:db8:1:2::1")
		s.open("2001:db8:1:2::2")
		s.expectRefused("2001:db8:1:2::1")
	})
}

func TestNewInvalid(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{
		{MaxClients: -1},
		{MaxPerIP: -1},
		{MaxPerIP: 1, IPv6Prefix: -1},
		{MaxPerIP: 1, IPv6Prefix: 129},
		{RetryMin: 10 * time.Second, RetryMax: time.Second},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded, want an error", cfg)
		}
	}
}
