package bridge_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/fakesource"
	"github.com/esbridge/esbridge/internal/poll"
)

// stalling is an in-memory stream whose readers tell the partitions set
// by stall as stalled, as a Kafka reader does of the partitions whose
// leader is down.
type stalling struct {
	*fakesource.Stream
	mu     sync.Mutex
	stalls []bridge.Stall
}

func (s *stalling) stall(partitions ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stalls = nil
	for _, p := range partitions {
		s.stalls = append(s.stalls, bridge.Stall{Partition: p, Since: time.Now().Add(-time.Second), Err: errors.New("leader not available")})
	}
}

func (s *stalling) Open(ctx context.Context, start bridge.Start) (bridge.Reader, error) {
	r, err := s.Stream.Open(ctx, start)
	if err != nil {
		return nil, err
	}
	return stallingReader{r, s}, nil
}

type stallingReader struct {
	bridge.Reader
	s *stalling
}

func (r stallingReader) Stalled() []bridge.Stall {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return append([]bridge.Stall(nil), r.s.stalls...)
}

// A route whose live reader cannot read some partitions stays ready while
// it reads most of them, and says which ones, for how long and why, on
// the admin /readyz and in its figures; with half of them stalled, it is
// not ready.
func TestStalledPartitions(t *testing.T) {
	src := &stalling{Stream: fakesource.New("six", 6, 1)}
	b := startBridge(t, bridge.Config{}, bridge.Route{Path: "/six", Source: src})
	srv := httptest.NewServer(b)
	defer srv.Close()
	admin := httptest.NewServer(http.HandlerFunc(b.ServeReadyz))
	defer admin.Close()
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	poll.Until(t, 10*time.Second, "the route is ready", b.Ready)

	src.stall(1, 4)
	if code, body := get(srv.URL + "/readyz"); code != 200 {
		t.Errorf("/readyz with 2 of 6 partitions stalled: %d %q, want 200", code, body)
	}
	code, body := get(admin.URL)
	if code != 200 || !strings.Contains(body, "/six fake/six ready, 2 partitions stalled: 1 for ") || !strings.Contains(body, ", 4 for ") || !strings.Contains(body, "(leader not available)") {
		t.Errorf("admin /readyz with 2 of 6 partitions stalled: %d %q", code, body)
	}
	st := b.Stats(context.Background())[0]
	if len(st.Partitions) != 6 {
		t.Fatalf("%d partitions in the figures, want 6", len(st.Partitions))
	}
	for p, ps := range st.Partitions {
		if stalled := p == 1 || p == 4; (ps.Stalled >= time.Second) != stalled || (ps.StallError != nil) != stalled {
			t.Errorf("partition %d: stalled %v (%v), want stalled %v", p, ps.Stalled, ps.StallError, stalled)
		}
		if ps.LastRead.IsZero() {
			t.Errorf("partition %d: no time of last read", p)
		}
	}

	src.stall(0, 2, 5)
	if code, body := get(srv.URL + "/readyz"); code != 503 {
		t.Errorf("/readyz with 3 of 6 partitions stalled: %d %q, want 503", code, body)
	}
	if code, body := get(admin.URL); code != 503 || !strings.Contains(body, "/six fake/six not ready, 3 partitions stalled") {
		t.Errorf("admin /readyz with 3 of 6 partitions stalled: %d %q", code, body)
	}

	src.stall()
	if code, body := get(srv.URL + "/readyz"); code != 200 {
		t.Errorf("/readyz with every partition read: %d %q, want 200", code, body)
	}
}

// From the start of Shutdown, /readyz answers 503, so that a load
// balancer sends the clients that the drain ends to another instance.
func TestReadyzWhileDraining(t *testing.T) {
	src := fakesource.New("one", 1, 1)
	b := startBridge(t, bridge.Config{}, bridge.Route{Path: "/one", Source: src})
	srv := httptest.NewServer(b)
	defer srv.Close()
	poll.Until(t, 10*time.Second, "the route is ready", b.Ready)
	// A client that stays: the drain ends its stream.
	resp, err := http.Get(srv.URL + "/one")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	done := make(chan error, 1)
	go func() { done <- b.Shutdown(context.Background()) }()
	poll.Until(t, 10*time.Second, "the bridge is not ready", func() bool { return !b.Ready() })
	r, err := http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 503 || !strings.Contains(string(body), "draining") {
		t.Errorf("/readyz while draining: %d %q, want 503 draining", r.StatusCode, body)
	}
	rec := httptest.NewRecorder()
	b.ServeReadyz(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 503 || !strings.HasPrefix(rec.Body.String(), "not ready\ndraining\n") {
		t.Errorf("admin /readyz while draining: %d %q", rec.Code, rec.Body)
	}
	io.Copy(io.Discard, resp.Body) // the stream ends with its retry line
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}
