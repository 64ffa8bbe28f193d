package main

// Helpers of the program-level tests: the esbridge binary, built once per
// flavour; bridge processes with their stderr captured; an embedded
// nats-server that can be restarted on the same port and store; and an SSE
// client that parses the stream as a browser does.

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/esbridge/esbridge/internal/brokertest"
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

// A proc is a running esbridge process.
type proc struct {
	t      *testing.T
	args   []string
	cmd    *exec.Cmd
	stderr *progtest.Buffer
	exited chan struct{} // closed when the process has exited
	state  *os.ProcessState
	addr   string // host:port it listens on, once known
}

// listenRE finds the address in the startup line, in text or JSON logs.
var listenRE = regexp.MustCompile(`msg="esbridge listening" addr=(\S+)|"msg":"esbridge listening","addr":"([^"]+)"`)

// startProc starts the binary bin with args, without waiting for anything.
// At cleanup it is stopped (SIGTERM, then SIGKILL) and, if the test failed,
// its stderr is logged.
func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, args: args, stderr: &progtest.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	// The race detector waits a second at exit unless told not to.
	p.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	p.cmd.Stderr = p.stderr
	p.cmd.Stdout = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill()
		if strings.Contains(p.stderr.String(), "DATA RACE") {
			t.Errorf("the race detector found a data race in esbridge")
		}
		if t.Failed() {
			t.Logf("stderr of esbridge %s:\n%s", strings.Join(p.args, " "), p.stderr.String())
		}
	})
	return p
}

// startBridge starts the race-enabled esbridge with args and waits until it
// listens. Add "-listen", "127.0.0.1:0" to args for a free port.
func startBridge(t *testing.T, args ...string) *proc {
	t.Helper()
	return startBridgeBin(t, binary(t), args...)
}

func startBridgeBin(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := startProc(t, bin, args...)
	deadline := time.Now().Add(waitFor)
	for {
		if m := listenRE.FindStringSubmatch(p.stderr.String()); m != nil {
			p.addr = m[1] + m[2]
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("esbridge %s exited before listening (%v):\n%s", strings.Join(args, " "), p.state, p.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("esbridge %s did not listen in %v:\n%s", strings.Join(args, " "), waitFor, p.stderr.String())
		}
	}
}

// url returns the URL of path on the bridge.
func (p *proc) url(path string) string { return "http://" + p.addr + path }

// port returns the port the bridge listens on.
func (p *proc) port() string {
	_, port, err := net.SplitHostPort(p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	return port
}

// signal sends sig to the process, if it still runs.
func (p *proc) signal(sig os.Signal) {
	select {
	case <-p.exited:
	default:
		p.cmd.Process.Signal(sig)
	}
}

// wait waits up to d for the process to exit and returns its exit code.
func (p *proc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.state.ExitCode()
	case <-time.After(d):
		p.t.Fatalf("esbridge did not exit within %v:\n%s", d, p.stderr.String())
		return -1
	}
}

// stop ends the process with SIGTERM and checks that it exits 0.
func (p *proc) stop() {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	if code := p.wait(waitFor); code != 0 {
		p.t.Fatalf("esbridge exited with status %d after SIGTERM:\n%s", code, p.stderr.String())
	}
}

// kill ends the process, gently first.
func (p *proc) kill() {
	p.signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return
	case <-time.After(waitFor):
	}
	p.cmd.Process.Kill()
	<-p.exited
}

// get does a plain GET of path and returns the status and body.
func (p *proc) get(path string) (int, string, http.Header) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url(path), nil)
	if err != nil {
		p.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Fatalf("GET %s: reading the body: %v", path, err)
	}
	return resp.StatusCode, string(body), resp.Header
}

// waitReadyz polls /readyz until it answers want.
func (p *proc) waitReadyz(want int) {
	p.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		code, body, _ := p.get("/readyz")
		if code == want {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("/readyz answers %d %q, want %d after %v", code, strings.TrimSpace(body), want, waitFor)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLog waits until the process has logged a line containing substr n
// times.
func (p *proc) waitLog(substr string, n int) {
	p.t.Helper()
	deadline := time.Now().Add(waitFor)
	for strings.Count(p.stderr.String(), substr) < n {
		if time.Now().After(deadline) {
			p.t.Fatalf("esbridge did not log %q %d times within %v:\n%s", substr, n, waitFor, p.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
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
		deadline := time.Now().Add(waitFor)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			// The message ID makes a retry of a publish that was stored
			// but not acknowledged a no-op.
			_, err := pb.js.Publish(ctx, pb.subject, []byte(s), jetstream.WithMsgID(pb.subject+"#"+strconv.Itoa(pb.n)))
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				pb.t.Fatalf("publish %q: %v", s, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
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
			if resp, err := hc.Get(b.url("/readyz")); err == nil {
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
