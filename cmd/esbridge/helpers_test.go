package main

// Helpers of the program-level tests: the esbridge binary, built once per
// flavour; bridge processes with their stderr captured; an embedded
// nats-server that can be restarted on the same port and store; and an SSE
// client that parses the stream as a browser does.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
	"github.com/esbridge/esbridge/internal/progtest"
	"github.com/esbridge/esbridge/internal/ssetest"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// waitFor bounds every wait of these tests for something that should happen.
const waitFor = 20 * time.Second

// The esbridge program, built at first use: with the race detector for
// the functional tests, without it for the load tests.
var (
	raceBuild  = &progtest.Build{Race: true}
	plainBuild = &progtest.Build{}
)

func TestMain(m *testing.M) {
	code := m.Run()
	raceBuild.Remove()
	plainBuild.Remove()
	os.Exit(code)
}

// binary returns the path of the esbridge binary built with the race
// detector: the processes of the functional tests run with it.
func binary(t testing.TB) string { return raceBuild.Path(t) }

// plainBinary returns the path of the esbridge binary built without the race
// detector, for the load test.
func plainBinary(t testing.TB) string { return plainBuild.Path(t) }

// A proc is a running esbridge process, with the helpers of these tests.
type proc struct {
	*progtest.Proc
	t *testing.T
}

// startProc starts the binary bin with args, without waiting for anything.
// At cleanup it is stopped (SIGTERM, then SIGKILL) and, if the test failed,
// its output is logged.
func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	return &proc{progtest.Start(t, bin, args), t}
}

// startBridge starts the race-enabled esbridge with args and waits until it
// listens. Add "-listen", "127.0.0.1:0" to args for a free port.
func startBridge(t *testing.T, args ...string) *proc {
	t.Helper()
	return startBridgeBin(t, binary(t), args...)
}

func startBridgeBin(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	return &proc{progtest.Listen(t, bin, args), t}
}

// natsServer is an embedded nats-server with JetStream that can be stopped
// and started again on the same port and store.
type natsServer struct {
	*brokertest.NATSServer
	t *testing.T
}

// runNATS starts a nats-server, shut down at cleanup.
func runNATS(t *testing.T) *natsServer {
	t.Helper()
	return &natsServer{brokertest.RunNATS(t), t}
}

// conn returns a client connection for publishing, closed at cleanup.
func (ns *natsServer) conn() *nats.Conn {
	ns.t.Helper()
	nc, err := nats.Connect("nats://"+ns.Addr(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		ns.t.Fatal(err)
	}
	ns.t.Cleanup(nc.Close)
	return nc
}

// jetStream returns a JetStream publisher with stream name on subjects
// name.lowercase.>, and the route URL of the stream.
func (ns *natsServer) jetStream(name string) (*publisher, string) {
	ns.t.Helper()
	js, err := jetstream.New(ns.conn())
	if err != nil {
		ns.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	subject := strings.ToLower(name)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subject + ".>"}}); err != nil {
		ns.t.Fatal(err)
	}
	return &publisher{t: ns.t, js: js, subject: subject + ".new"}, "jetstream://" + ns.Addr() + "/" + name
}

// A publisher publishes to one subject of a JetStream stream.
type publisher struct {
	t       *testing.T
	js      jetstream.JetStream
	subject string
	n       int // messages published
}

// publish publishes each payload, waiting for the stream's ack.
func (pb *publisher) publish(payloads ...string) {
	pb.t.Helper()
	for _, s := range payloads {
		pb.n++
		// A publish may meet a server that is restarting: retry until acked.
		poll.UntilNil(pb.t, waitFor, fmt.Sprintf("%q is published", s), func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			// The message ID makes a retry of a publish that was stored
			// but not acknowledged a no-op.
			_, err := pb.js.Publish(ctx, pb.subject, []byte(s), jetstream.WithMsgID(pb.subject+"#"+strconv.Itoa(pb.n)))
			return err
		})
	}
}

// seq returns the payloads prefix+from .. prefix+to.
func seq(prefix string, from, to int) []string {
	var s []string
	for i := from; i <= to; i++ {
		s = append(s, prefix+strconv.Itoa(i))
	}
	return s
}

// An sseClient reads one event stream, parsing it as a browser does.
type sseClient struct {
	t        *testing.T
	url      string
	wantType string // the type of the route's messages: "message" unless set
	resp     *http.Response
	cancel   context.CancelFunc
	events   chan ssetest.Event
	done     chan struct{} // closed when the body has ended
	err      error         // why the body ended (nil for EOF), once done

	mu     sync.Mutex
	raw    []byte // the body as received
	parser *ssetest.Parser
	last   string // the last event ID, as EventSource.lastEventId
}

// connect opens an event stream at url, with the Last-Event-ID header if
// lastID is not empty, and checks that the response is a stream.
func connect(t *testing.T, url, lastID string) *sseClient {
	t.Helper()
	return connectWith(t, url, lastID, nil)
}

// connectWith is connect with header added to the request.
func connectWith(t *testing.T, url, lastID string, header http.Header) *sseClient {
	t.Helper()
	header = header.Clone()
	if lastID != "" {
		if header == nil {
			header = http.Header{}
		}
		header.Set("Last-Event-ID", lastID)
	}
	return openStream(t, http.DefaultClient, url, header)
}

// openStream opens an event stream at url with hc and the given headers,
// checks that the response is a stream, and returns its client: a stream
// served, or one refused over a limit with a retry line.
func openStream(t *testing.T, hc *http.Client, url string, header http.Header) *sseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := hc.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	c := &sseClient{t: t, url: url, wantType: "message", resp: resp, cancel: cancel,
		events: make(chan ssetest.Event, 1<<16), done: make(chan struct{}), parser: ssetest.NewParser()}
	t.Cleanup(c.close)
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: status %d, want 200 (a browser would give up for good): %s", url, resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("GET %s: Content-Type %q, want text/event-stream", url, ct)
	}
	go c.read()
	return c
}

func (c *sseClient) read() {
	defer close(c.done)
	buf := make([]byte, 32<<10)
	for {
		n, err := c.resp.Body.Read(buf)
		c.mu.Lock()
		c.raw = append(c.raw, buf[:n]...)
		evs := c.parser.Feed(buf[:n])
		c.last = c.parser.LastEventID
		c.mu.Unlock()
		for _, ev := range evs {
			c.events <- ev
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				c.err = err
			}
			return
		}
	}
}

// close ends the request, as a browser closing the page does.
func (c *sseClient) close() {
	c.cancel()
	<-c.done
	c.resp.Body.Close()
}

// lastEventID returns the client's last event ID, as EventSource has it.
func (c *sseClient) lastEventID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// body returns what the client received so far.
func (c *sseClient) body() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.raw)
}

// next returns the next event, failing the test if none comes in time.
func (c *sseClient) next() ssetest.Event {
	c.t.Helper()
	select {
	case ev := <-c.events:
		return ev
	case <-time.After(waitFor):
	}
	// The stream may have ended with the event in flight.
	select {
	case ev := <-c.events:
		return ev
	default:
	}
	select {
	case <-c.done:
		c.t.Fatalf("%s: stream ended (%v) while waiting for an event; received:\n%s", c.url, c.err, c.body())
	default:
		c.t.Fatalf("%s: no event within %v; received:\n%s", c.url, waitFor, c.body())
	}
	return ssetest.Event{}
}

// expectData checks that the next events are messages with the given data,
// in order, and returns the last one.
func (c *sseClient) expectData(want ...string) ssetest.Event {
	c.t.Helper()
	var ev ssetest.Event
	for i, w := range want {
		ev = c.next()
		if ev.Type != c.wantType || ev.Data != w {
			c.t.Fatalf("%s: event %d of %d: got type %q data %q, want type %q data %q; received:\n%s",
				c.url, i+1, len(want), ev.Type, ev.Data, c.wantType, w, c.body())
		}
	}
	return ev
}

// expectOnly checks that nothing else is on its way: a marker published
// now must be the very next event.
func (c *sseClient) expectOnly(marker string, publish func(...string)) {
	c.t.Helper()
	publish(marker)
	c.expectData(marker)
}

// expectEnd waits for the body to end, and returns what came after the
// events that were taken: the events left unread are returned.
func (c *sseClient) expectEnd() []ssetest.Event {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(waitFor):
		c.t.Fatalf("%s: stream did not end within %v; received:\n%s", c.url, waitFor, c.body())
	}
	if c.err != nil {
		c.t.Fatalf("%s: stream ended with %v, want a clean end; received:\n%s", c.url, c.err, c.body())
	}
	var rest []ssetest.Event
	for {
		select {
		case ev := <-c.events:
			rest = append(rest, ev)
		default:
			return rest
		}
	}
}

// syncLive makes sure that c, a fresh client of a route starting with the
// latest message, is served live: it publishes markers until one arrives.
// The events after it are the messages published after syncLive returns.
func (c *sseClient) syncLive(publish func(...string)) {
	c.t.Helper()
	deadline := time.Now().Add(waitFor)
	for i := 1; ; i++ {
		marker := "sync-" + strconv.Itoa(i)
		publish(marker)
		select {
		case ev := <-c.events:
			if ev.Type != c.wantType || !strings.HasPrefix(ev.Data, "sync-") {
				c.t.Fatalf("%s: got type %q data %q while waiting for a sync marker", c.url, ev.Type, ev.Data)
			}
			// Take the markers still in flight: each was published before
			// the one that came last.
			for n, _ := strconv.Atoi(strings.TrimPrefix(ev.Data, "sync-")); n < i; n++ {
				c.expectData("sync-" + strconv.Itoa(n+1))
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: no sync marker arrived within %v; received:\n%s", c.url, waitFor, c.body())
		}
	}
}

// watchReadyz polls /readyz until the test ends, and returns a function
// that lists the distinct answers seen so far, in order.
func watchReadyz(t *testing.T, b *proc) func() []string {
	var mu sync.Mutex
	var codes []string
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		hc := &http.Client{Timeout: 2 * time.Second}
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			code := "error"
			if resp, err := hc.Get(b.URL("/readyz")); err == nil {
				resp.Body.Close()
				code = strconv.Itoa(resp.StatusCode)
			}
			mu.Lock()
			if len(codes) == 0 || codes[len(codes)-1] != code {
				codes = append(codes, code)
			}
			mu.Unlock()
		}
	})
	t.Cleanup(func() { close(done); wg.Wait() })
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(codes)
	}
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	if len(lines) == 0 {
		return ""
	}
	return lines[len(lines)-1]
}

// freePort returns a port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// scanLines returns the lines of s.
func scanLines(s string) []string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}
