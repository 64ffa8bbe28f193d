package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SIGTERM ends every stream with what was published, then a retry line,
// and the process exits 0 without waiting for the drain timeout.
func TestSIGTERMDrains(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	pub, stream := ns.jetStream("ORDERS")
	// A drain timeout longer than this test waits: ending the streams must
	// not take it.
	b := startBridge(t, "-listen", "127.0.0.1:0", "-route", "/orders="+stream, "-drain-timeout", "1m")
	b.WaitReadyz(200)
	clients := []*sseClient{connect(t, b.URL("/orders"), "")}
	clients[0].syncLive(pub.publish)
	clients = append(clients, connect(t, b.URL("/orders"), clients[0].lastEventID()))
	pub.publish(seq("m", 1, 3)...)
	for _, c := range clients {
		c.expectData(seq("m", 1, 3)...)
	}

	b.Signal(syscall.SIGTERM)
	for _, c := range clients {
		if rest := c.expectEnd(); len(rest) > 0 {
			t.Errorf("events after m3: %+v", rest)
		}
		if line := lastLine(c.body()); !strings.HasPrefix(line, "retry: ") {
			t.Errorf("the stream ends with %q, want a retry line; received:\n%s", line, c.body())
		}
	}
	if code := b.Wait(waitFor); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0", code)
	}
}

// A client that does not read does not hold the process past the drain
// timeout.
func TestSIGTERMWithStalledClient(t *testing.T) {
	t.Parallel()
	b, c := bridgeWithStalledClient(t, "2s")
	b.Signal(syscall.SIGTERM)
	c.expectEnd()
	// The stalled client's writes would only time out after 30 s.
	if code := b.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0", code)
	}
	// The client did hold its stream open (else this test tests nothing).
	if !strings.Contains(b.Output(), "did not all end in time") {
		t.Errorf("no warning that a stream outlived the drain timeout:\n%s", b.Output())
	}
}

// A second SIGTERM ends the process at once, drain or not.
func TestSecondSIGTERM(t *testing.T) {
	t.Parallel()
	b, c := bridgeWithStalledClient(t, "10m")
	b.Signal(syscall.SIGTERM)
	c.expectEnd()
	b.WaitLog("shutting down", 1)
	select {
	case <-b.Exited():
		t.Fatalf("esbridge exited (%v) while the stalled client's stream was open", b.State())
	default:
	}
	b.Signal(syscall.SIGTERM)
	select {
	case <-b.Exited():
	case <-time.After(waitFor):
		t.Fatalf("esbridge still runs %v after a second SIGTERM", waitFor)
	}
}

// bridgeWithStalledClient starts a bridge with the given drain timeout and
// a route with two clients: one that sends its request and never reads the
// response, stalled with megabytes on their way to it, and one that keeps
// up, which is returned.
func bridgeWithStalledClient(t *testing.T, drain string) (*proc, *sseClient) {
	t.Helper()
	ns := runNATS(t)
	pub, stream := ns.jetStream("ORDERS")
	b := startBridge(t, "-listen", "127.0.0.1:0", "-route", "/orders="+stream, "-drain-timeout", drain)
	b.WaitReadyz(200)

	// A reader that keeps up, to know when the messages went out.
	c := connect(t, b.URL("/orders"), "")
	c.syncLive(pub.publish)

	conn, err := net.Dial("tcp", b.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.(*net.TCPConn).SetReadBuffer(4 << 10) // no autotuning: stall soon
	fmt.Fprintf(conn, "GET /orders HTTP/1.1\r\nHost: %s\r\nLast-Event-ID: %s\r\n\r\n", b.Addr, c.lastEventID())

	// Enough data to fill the socket buffers of the stalled client.
	big := strings.Repeat("x", 60<<10)
	var want []string
	for i := range 150 {
		want = append(want, fmt.Sprintf("%d%s", i, big))
	}
	pub.publish(want...)
	c.expectData(want...)
	return b, c
}

// -demo runs on its own: the page at /, a live stream at /demo of JSON
// envelopes with consecutive sequence numbers, and health checks.
func TestDemo(t *testing.T) {
	t.Parallel()
	b := startBridge(t, "-demo", "-listen", "127.0.0.1:0")
	b.WaitReadyz(200)

	code, body, h := b.Get("/")
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(body, "EventSource") {
		t.Errorf("GET /: %d %q, want 200 text/html with a page that uses EventSource", code, h.Get("Content-Type"))
	}
	if code, _, _ := b.Get("/healthz"); code != 200 {
		t.Errorf("GET /healthz: %d, want 200", code)
	}
	if code, _, _ := b.Get("/no-such-route"); code != 404 {
		t.Errorf("GET /no-such-route: %d, want 404", code)
	}

	c := connect(t, b.URL("/demo"), "")
	var prev uint64
	for i := range 4 {
		ev := c.next()
		var env struct {
			Subject  string          `json:"subject"`
			Sequence *uint64         `json:"sequence"`
			Data     json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &env); err != nil || env.Sequence == nil {
			t.Fatalf("event %d: type %q data %q: want a JSON envelope with a sequence (%v)", i, ev.Type, ev.Data, err)
		}
		if !strings.HasPrefix(env.Subject, "demo.") || len(env.Data) == 0 || ev.LastEventID == "" {
			t.Errorf("event %d: %q (id %q): want a demo.* subject, data and an ID", i, ev.Data, ev.LastEventID)
		}
		if i > 0 && *env.Sequence != prev+1 {
			t.Errorf("event %d: sequence %d after %d", i, *env.Sequence, prev)
		}
		prev = *env.Sequence
	}
	b.Stop()
}

// The health checks and an unknown path, on a bridge with a route.
func TestHealthAndNotFound(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	_, stream := ns.jetStream("ORDERS")
	b := startBridge(t, "-listen", "127.0.0.1:0", "-route", "/orders="+stream, "-log-format", "json", "-log-level", "debug")
	b.WaitReadyz(200)
	if code, body, _ := b.Get("/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Errorf("GET /healthz: %d %q, want 200 ok", code, body)
	}
	if code, _, _ := b.Get("/nope"); code != 404 {
		t.Errorf("GET /nope: %d, want 404", code)
	}
	if code, _, _ := b.Get("/orders/more"); code != 404 {
		t.Errorf("GET /orders/more: %d, want 404", code)
	}
	// Headers are bounded far below net/http's 1 MB.
	req, _ := http.NewRequest(http.MethodGet, b.URL("/healthz"), nil)
	req.Header.Set("Last-Event-ID", strings.Repeat("A", 100<<10))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("GET with a 100 KB header: %v %v, want 431", resp, err)
	} else {
		resp.Body.Close()
	}
	// With -log-format json every line of stderr is a JSON object.
	b.Stop()
	sc := bufio.NewScanner(strings.NewReader(b.Output()))
	for sc.Scan() {
		var v map[string]any
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Errorf("-log-format json: line %q: %v", sc.Text(), err)
		}
	}
}

// A route whose NATS server is not up yet: the program starts, serves
// /healthz, and answers /readyz 503 naming the route until NATS comes.
func TestStartBeforeNATS(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	ns.Stop() // its port and store are kept for later
	b := startBridge(t, "-listen", "127.0.0.1:0", "-route", "/ticks=nats://"+ns.Addr()+"/ticks.>")
	if code, _, _ := b.Get("/healthz"); code != 200 {
		t.Errorf("GET /healthz: %d, want 200", code)
	}
	code, body, _ := b.Get("/readyz")
	if code != 503 || !strings.Contains(body, "/ticks") {
		t.Errorf("GET /readyz with NATS down: %d %q, want 503 naming /ticks", code, body)
	}
	ns.Start()
	b.WaitReadyz(200)
}
