package bridge_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/esource"
	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
	natssource "github.com/esbridge/esbridge/source/nats"
)

// These tests run the bridge against a real, embedded nats-server: the
// replay hand-off is only proven against a broker that replays.

// jetStream starts an embedded nats-server with a stream S on subjects
// "s.>" and returns a JetStream client for it and its address.
func jetStream(t *testing.T) (jetstream.JetStream, string) {
	t.Helper()
	ns := brokertest.RunNATS(t)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	return js, ns.Addr()
}

// serveBridge runs a bridge with one route /s on stream S and returns its
// URL once it is ready.
func serveBridge(t *testing.T, addr string, cfg bridge.Config, opts bridge.Options) string {
	t.Helper()
	src, err := natssource.New(natssource.Config{Servers: []string{addr}, Stream: "S"})
	if err != nil {
		t.Fatal(err)
	}
	return runBridge(t, bridge.Route{Path: "/s", Source: src, Options: opts}, cfg)
}

// runBridge runs a bridge serving rt until the test ends, and returns the
// route's URL once it is ready (see serveRoute).
func runBridge(t *testing.T, rt bridge.Route, cfg bridge.Config) string {
	t.Helper()
	_, url := serveRoute(t, rt, cfg)
	return url
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	poll.UntilNil(t, 10*time.Second, base+"/readyz answers 200", func() error {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}

func publish(t testing.TB, js jetstream.JetStream, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if _, err := js.Publish(context.Background(), "s.x", fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
}

// event is an SSE event as read by sseClient.
type event struct{ id, typ, data string }

// sseClient reads an event stream line by line. Its events are simple:
// single-line data, as these tests publish.
type sseClient struct {
	t    testing.TB
	resp *http.Response
	br   *bufio.Reader
	last string // the last event ID read
}

func open(t testing.TB, url, lastID string) *sseClient {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	// A time limit on the whole response: a test that waits for an event
	// that never comes fails rather than hangs.
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return &sseClient{t: t, resp: resp, br: bufio.NewReader(resp.Body)}
}

// next returns the next event with data, skipping ID-only frames.
func (c *sseClient) next() event {
	c.t.Helper()
	var ev event
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			c.t.Fatalf("reading the stream: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "":
			if line == "" && ev.data != "" {
				return ev
			}
			if line == "" {
				ev = event{}
			}
		case "id":
			ev.id = value
			c.last = value
		case "event":
			ev.typ = value
		case "data":
			if ev.data != "" {
				value = ev.data + "\n" + value // joined as browsers do
			}
			ev.data = value
		}
	}
}

// expect reads messages m<from>..m<to> and returns the last one's ID.
func (c *sseClient) expect(from, to int) string {
	c.t.Helper()
	var last string
	for i := from; i <= to; i++ {
		ev := c.next()
		if want := fmt.Sprintf("m%d", i); ev.data != want || ev.typ != "" {
			c.t.Fatalf("got %+v, want message %s", ev, want)
		}
		last = ev.id
	}
	return last
}

func TestResumeFromTheBroker(t *testing.T) {
	js, addr := jetStream(t)
	url := serveBridge(t, addr, bridge.Config{Backlog: 16}, bridge.Options{})

	first := open(t, url, "")
	publish(t, js, 1, 100)
	var ids []string
	for i := 1; i <= 100; i++ {
		ids = append(ids, first.expect(i, i))
	}
	// m10 has long left the log of 16 events: the broker replays.
	c := open(t, url, ids[9])
	c.expect(11, 100)
	publish(t, js, 101, 110)
	c.expect(101, 110)
	// One from the log.
	open(t, url, ids[95]).expect(97, 110)
}

func TestSlowClientIsReplayedFromTheBroker(t *testing.T) {
	js, addr := jetStream(t)
	url := serveBridge(t, addr, bridge.Config{Backlog: 8}, bridge.Options{})
	slow := open(t, url, "")
	publish(t, js, 1, 2000)
	// The client reads nothing until all is published, far more than the
	// log holds (and than the socket buffers would take, for the larger
	// payloads): it must still receive every message once, in order.
	slow.expect(1, 2000)
	publish(t, js, 2001, 2010)
	slow.expect(2001, 2010)
}

func TestStartEarliest(t *testing.T) {
	js, addr := jetStream(t)
	publish(t, js, 1, 5)
	url := serveBridge(t, addr, bridge.Config{}, bridge.Options{Earliest: true})
	c := open(t, url, "")
	c.expect(1, 5)
	publish(t, js, 6, 7)
	c.expect(6, 7)
}

// TestGapForAnUnusableID resumes from IDs the bridge cannot resume from:
// each client gets a gap with a stable reason and at most a short prefix
// of its ID, then the live stream.
func TestGapForAnUnusableID(t *testing.T) {
	js, addr := jetStream(t)
	url := serveBridge(t, addr, bridge.Config{}, bridge.Options{})
	watch := open(t, url, "")
	publish(t, js, 1, 1)
	watch.expect(1, 1)
	// An ID of this stream, moved far beyond its head: [head, stream tag,
	// incarnation tag, n, offset].
	raw, err := base64.RawURLEncoding.DecodeString(watch.last)
	if err != nil {
		t.Fatal(err)
	}
	ahead := base64.RawURLEncoding.EncodeToString(binary.AppendUvarint(raw[:8], 1e12))
	readers := countReaders(t, js) // none: no ID here can be replayed
	n := 1
	for _, tc := range []struct{ id, reason string }{
		{"garbage", "malformed-id"},
		{"EAAAAAAB", "other-stream"},
		{strings.Repeat("A", 900<<10), "malformed-id"}, // longer than any ID
		{ahead, "ahead"},
	} {
		c := open(t, url, tc.id)
		n++
		publish(t, js, n, n)
		ev := c.next()
		var gap struct{ Reason, Message, LastEventID string }
		if err := json.Unmarshal([]byte(ev.data), &gap); err != nil || ev.typ != "gap" {
			t.Fatalf("ID %.20q: got %+v, want a gap first (%v)", tc.id, ev, err)
		}
		if gap.Reason != tc.reason || gap.Message == "" || len(gap.LastEventID) > esource.MaxEchoedID+len("…") {
			t.Errorf("ID %.20q: gap %.200q, want reason %q, a message and a short ID", tc.id, ev.data, tc.reason)
		}
		c.expect(n, n)
		// Drain what the next iterations publish.
		go io.Copy(io.Discard, c.resp.Body)
	}
	if m := readers.Most(); m != 0 {
		t.Errorf("%d JetStream readers made for IDs that cannot be replayed", m)
	}
}

func TestEnvelopeAndSubjectType(t *testing.T) {
	js, addr := jetStream(t)
	url := serveBridge(t, addr, bridge.Config{}, bridge.Options{Type: bridge.TypeSubject, Format: bridge.FormatEnvelope})
	c := open(t, url, "")
	msg := &nats.Msg{Subject: "s.eu", Data: []byte("hello"), Header: nats.Header{"Kind": []string{"created"}}}
	if _, err := js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
	ev := c.next()
	var env struct {
		Subject  string
		Sequence uint64
		Headers  map[string][]string
		Time     time.Time
		Data     string
	}
	if err := json.Unmarshal([]byte(ev.data), &env); err != nil {
		t.Fatal(err)
	}
	if ev.typ != "s.eu" || env.Subject != "s.eu" || env.Sequence != 1 || env.Data != "hello" ||
		env.Headers["Kind"][0] != "created" || time.Since(env.Time) > time.Minute {
		t.Errorf("got type %q, envelope %+v", ev.typ, env)
	}
}

func TestReadyzAndUnknownPaths(t *testing.T) {
	_, addr := jetStream(t)
	src, err := natssource.New(natssource.Config{Servers: []string{addr}, Stream: "MISSING"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	b, err := bridge.New(bridge.Config{}, bridge.Route{Path: "/m", Source: src})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { b.Run(ctx) })
	defer wg.Wait()
	defer cancel()
	srv := httptest.NewServer(b)
	defer srv.Close()
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503, "/nope": 404} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d %q, want %d", path, resp.StatusCode, body, want)
		}
		if path == "/readyz" && !strings.Contains(string(body), "/m (jetstream/MISSING)") {
			t.Errorf("/readyz says %q, want the route that is not ready", body)
		}
	}
}

func TestNewRejectsBadRoutes(t *testing.T) {
	_, addr := jetStream(t)
	core, err := natssource.New(natssource.Config{Servers: []string{addr}, Subject: "a.>"})
	if err != nil {
		t.Fatal(err)
	}
	defer core.Close()
	for _, rt := range []bridge.Route{
		{Path: "x", Source: core},
		{Path: "/healthz", Source: core},
		{Path: "/a"},
		{Path: "/a", Source: core, Options: bridge.Options{Earliest: true}},
	} {
		if _, err := bridge.New(bridge.Config{}, rt); err == nil {
			t.Errorf("New accepted route %+v", rt)
		}
	}
}
