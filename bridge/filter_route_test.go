package bridge_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/fakesource"
	"github.com/esbridge/esbridge/internal/ssetest"
)

// TestKeyFilterCatchUp: a client filtered on a key, resuming from the
// start of a stream the log no longer holds, rides a catch-up reader and
// receives exactly the messages of its key, each partition in order; live
// messages follow, filtered too. After a stretch of other keys its last
// event ID moves (progress frames), and a resume from there receives the
// next message of its key and nothing before it.
func TestKeyFilterCatchUp(t *testing.T) {
	const partitions, keys = 3, 10
	stream := fakesource.New("t", partitions, 7)
	b, err := bridge.New(bridge.Config{Backlog: 16}, bridge.Route{Path: "/s", Source: stream})
	if err != nil {
		t.Fatal(err)
	}
	runInMemory(t, b)
	srv := httptest.NewServer(b)
	t.Cleanup(srv.Close)
	n := 0
	appendKeyed := func(count int, key func(i int) int) {
		for range count {
			p, k := n%partitions, key(n)
			stream.AppendKeyed(p, fmt.Appendf(nil, "k%d", k), fmt.Appendf(nil, "p%d-k%d-%d", p, k, n))
			n++
		}
	}
	appendKeyed(300, func(i int) int { return i % keys })
	// Before the client comes, the live log holds the newest only.
	waitLog(t, b, 300)

	s := openFiltered(t, srv.URL+"/s?key=k3", bridge.Origin(b, "/s"))
	appendKeyed(30, func(i int) int { return i % keys })
	var want []string
	for i := range 330 {
		if i%keys == 3 {
			want = append(want, fmt.Sprintf("p%d-k3-%d", i%partitions, i))
		}
	}
	got := s.read(t, len(want))
	// Each partition's messages in order, and all of them.
	for p := range partitions {
		var gp, wp []string
		for _, d := range got {
			if d[1] == byte('0'+p) {
				gp = append(gp, d)
			}
		}
		for _, d := range want {
			if d[1] == byte('0'+p) {
				wp = append(wp, d)
			}
		}
		if fmt.Sprint(gp) != fmt.Sprint(wp) {
			t.Fatalf("partition %d: got %v, want %v", p, gp, wp)
		}
	}

	// A stretch of other keys: the browser's last event ID moves past it.
	last := s.p.LastEventID
	appendKeyed(100, func(int) int { return 5 })
	s.waitIDChange(t, last)
	s.resp.Body.Close()
	from := s.p.LastEventID
	appendKeyed(1, func(int) int { return 3 })
	s = openFiltered(t, srv.URL+"/s?key=k3", from)
	if got := s.read(t, 1); got[0] != fmt.Sprintf("p%d-k3-%d", (n-1)%partitions, n-1) {
		t.Errorf("after resuming from the progress ID: %v, want only the new message", got)
	}
}

// waitLog waits until a client from the start of the route's log has
// received count messages: the live reader has published them.
func waitLog(t *testing.T, b *bridge.Bridge, count int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		events, err := bridge.Tee(t.Context(), b, "/s", bridge.Origin(b, "/s"))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for ev := range events {
			if ev.Data != nil {
				got++
			}
			if got == count {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the live log did not receive the messages")
		}
	}
}

// sseStream reads a stream with the spec-literal parser.
type sseStream struct {
	resp *http.Response
	p    *ssetest.Parser
	buf  []byte
	evs  []ssetest.Event
}

func openFiltered(t *testing.T, url, lastID string) *sseStream {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Last-Event-ID", lastID)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return &sseStream{resp: resp, p: ssetest.NewParser(), buf: make([]byte, 32<<10)}
}

// read returns the data of the next count events, failing on a gap.
func (s *sseStream) read(t *testing.T, count int) []string {
	t.Helper()
	timer := time.AfterFunc(10*time.Second, func() { s.resp.Body.Close() })
	defer timer.Stop()
	var data []string
	for len(data) < count {
		if len(s.evs) == 0 {
			n, err := s.resp.Body.Read(s.buf)
			s.evs = s.p.Feed(s.buf[:n])
			if err != nil && len(s.evs) == 0 {
				t.Fatalf("after %d events: %v", len(data), err)
			}
			continue
		}
		ev := s.evs[0]
		s.evs = s.evs[1:]
		if ev.Type != "message" {
			t.Fatalf("event %+v", ev)
		}
		data = append(data, ev.Data)
	}
	return data
}

// waitIDChange reads, dispatching no event, until the browser's last
// event ID is no longer last.
func (s *sseStream) waitIDChange(t *testing.T, last string) {
	t.Helper()
	timer := time.AfterFunc(10*time.Second, func() { s.resp.Body.Close() })
	defer timer.Stop()
	for s.p.LastEventID == last {
		n, err := s.resp.Body.Read(s.buf)
		if evs := s.p.Feed(s.buf[:n]); len(evs) > 0 {
			t.Fatalf("events of a skipped key: %+v", evs)
		}
		if err != nil {
			t.Fatalf("no progress frame: %v", err)
		}
	}
}
