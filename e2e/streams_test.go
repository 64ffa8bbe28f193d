package e2e

// The scenarios of a browser reading a stream with history through
// esbridge, for every row of routeKinds: what the page records must be
// exactly what was published, partition by partition, whatever happens to
// the bridges.

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/esbridge/esbridge/esource"
	"github.com/esbridge/esbridge/internal/poll"
)

// TestStreams runs every scenario against every kind of route, each in a
// world of its own.
func TestStreams(t *testing.T) {
	scenarios := []struct {
		name string
		run  func(t *testing.T, w *world)
	}{
		{"live", testLive},
		{"restart", testRestart},
		{"failover", testFailover},
		{"drain", testDrain},
	}
	for _, kind := range routeKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			for _, sc := range scenarios {
				t.Run(sc.name, func(t *testing.T) {
					t.Parallel()
					sc.run(t, newWorld(t, kind))
				})
			}
		})
	}
}

// Messages published before the page opens and while it is open are all
// recorded, in order.
func testLive(t *testing.T, w *world) {
	w.startBridges(1)
	w.feed.publishRounds(20)
	pg := w.open()
	w.waitMessages(pg, 20*w.kind.partitions)
	w.feed.publishRounds(20)
	w.feed.expectAll(pg)
}

// The bridge is killed and started again while messages keep coming: the
// browser reconnects by itself and resumes where it was.
func testRestart(t *testing.T, w *world) {
	w.startBridges(1)
	pg := w.open()
	stop := w.feed.keepPublishing()
	w.waitMessages(pg, 10)
	w.bridges[0].Kill()
	b := w.startBridge()
	w.proxy.setBackends(b.Addr)
	w.waitReopened(pg)
	stop()
	w.feed.expectAll(pg)
	w.expectResumed()
}

// Two bridges behind the proxy; the one serving the page is killed: the
// browser moves to the other and loses nothing.
func testFailover(t *testing.T, w *world) {
	w.startBridges(2)
	pg := w.open()
	stop := w.feed.keepPublishing()
	w.waitMessages(pg, 10)
	first := w.proxy.logged()[0]
	w.bridgeAt(first.backend).Kill()
	w.waitReopened(pg)
	stop()
	w.feed.expectAll(pg)
	w.expectResumed()
	streams := w.proxy.logged()
	if last := streams[len(streams)-1]; last.backend == first.backend {
		t.Errorf("the page reconnected to the killed bridge at %s", first.backend)
	}
}

// retryRE finds the retry lines of a stream.
var retryRE = regexp.MustCompile(`(?m)^retry: (\d+)$`)

// Two bridges behind the proxy; the one serving the page is drained
// (SIGTERM): its stream ends with a retry line, and the browser reconnects
// after that delay, to the other bridge, and loses nothing.
func testDrain(t *testing.T, w *world) {
	w.startBridges(2)
	pg := w.open()
	stop := w.feed.keepPublishing()
	w.waitMessages(pg, 10)
	drained := w.proxy.logged()[0]
	b := w.bridgeAt(drained.backend)
	b.Signal(syscall.SIGTERM)
	if code := b.Wait(waitFor); code != 0 {
		t.Errorf("the drained bridge exited with status %d, want 0", code)
	}
	w.waitReopened(pg)
	stop()
	w.feed.expectAll(pg)
	w.expectResumed()

	body, end := drained.state()
	m := retryRE.FindAllStringSubmatch(body, -1)
	if end.IsZero() || len(m) < 2 || !strings.HasSuffix(strings.TrimRight(body, "\n"), m[len(m)-1][0]) {
		t.Fatalf("the drained stream does not end with a retry line after the one it began with:\n%s", tail(body))
	}
	retryMS, _ := strconv.Atoi(m[len(m)-1][1])
	retry := time.Duration(retryMS) * time.Millisecond
	var next *stream
	for _, s := range w.proxy.logged() {
		if s.at.After(end) {
			next = s
			break
		}
	}
	if next == nil {
		t.Fatal("no request after the drained stream ended")
	}
	delay := next.at.Sub(end)
	t.Logf("drain: retry %v, the browser came back after %v", retry, delay.Round(time.Millisecond))
	if delay < retry {
		t.Errorf("the browser came back %v after the drain, before the retry of %v", delay, retry)
	}
	// A browser that ignored the drain's retry would wait the delay of the
	// stream's first retry line, esbridge's default.
	if connectRetry := esource.DefaultRetry; retry < connectRetry && delay >= connectRetry {
		t.Errorf("the browser came back %v after the drain: the stream's first retry, not the drain's %v", delay, retry)
	}
}

// A world is one scenario's: a stream of one kind, a feed of messages to
// it, esbridge instances serving it at /s behind a proxy, and a browser.
type world struct {
	t       *testing.T
	kind    routeKind
	route   string
	feed    *feed
	bridges []*bridge
	proxy   *proxy
	browser *browser
}

func newWorld(t *testing.T, kind routeKind) *world {
	t.Helper()
	w := &world{t: t, kind: kind, browser: launchBrowser(t)}
	url, publish := kind.newStream(t)
	w.route = "/s=" + url
	w.feed = &feed{t: t, publish: publish, sent: make([][]string, kind.partitions)}
	w.proxy = startProxy(t)
	return w
}

// startBridge starts an esbridge instance and waits until it is ready.
func (w *world) startBridge() *bridge {
	w.t.Helper()
	b := startBridge(w.t, "-route", w.route)
	b.waitReady()
	w.bridges = append(w.bridges, b)
	return b
}

// startBridges starts n instances and puts them behind the proxy.
func (w *world) startBridges(n int) {
	w.t.Helper()
	var addrs []string
	for range n {
		addrs = append(addrs, w.startBridge().Addr)
	}
	w.proxy.setBackends(addrs...)
}

// bridgeAt returns the bridge listening on addr.
func (w *world) bridgeAt(addr string) *bridge {
	w.t.Helper()
	for _, b := range w.bridges {
		if b.Addr == addr {
			return b
		}
	}
	w.t.Fatalf("no bridge at %s", addr)
	return nil
}

// open opens the test page on the stream and waits until its EventSource
// is open.
func (w *world) open() *page {
	w.t.Helper()
	pg := w.browser.open(w.proxy.pageURL("/s"))
	w.t.Cleanup(func() {
		if w.t.Failed() {
			w.t.Logf("the page recorded:\n%s", describe(pg.recorded()))
		}
	})
	poll.Until(w.t, waitFor, "the page's EventSource is open", func() bool { return count(pg.recorded(), "open") > 0 })
	return pg
}

// waitMessages waits until the page has recorded n events.
func (w *world) waitMessages(pg *page, n int) {
	w.t.Helper()
	poll.Until(w.t, waitFor, fmt.Sprintf("the page has %d events", n), func() bool { return count(pg.recorded(), "event") >= n })
}

// waitReopened waits until the page's EventSource has opened again and
// then received a few messages for every partition.
func (w *world) waitReopened(pg *page) {
	w.t.Helper()
	poll.Until(w.t, waitFor, "the page's EventSource opens again", func() bool {
		rs := pg.recorded()
		if closedForGood(rs) {
			w.t.Fatalf("the page's EventSource failed for good (readyState CLOSED): it will not reconnect")
		}
		return count(rs, "open") > 1
	})
	n := count(pg.recorded(), "event") + 3*w.kind.partitions
	w.waitMessages(pg, n)
}

// expectResumed checks that the browser's last request to the proxy sent
// the Last-Event-ID header: the page resumed, rather than starting over.
func (w *world) expectResumed() {
	w.t.Helper()
	streams := w.proxy.logged()
	if len(streams) < 2 {
		w.t.Fatalf("%d requests for the stream, want a reconnect", len(streams))
	}
	if last := streams[len(streams)-1]; last.lastEventID == "" {
		w.t.Errorf("the browser reconnected without Last-Event-ID")
	}
}

// A feed publishes messages "p<partition>-<n>" to a stream, in rounds of
// one per partition, and keeps what the broker took.
type feed struct {
	t       *testing.T
	publish func(partition int, payloads ...string) error

	mu     sync.Mutex
	rounds int
	sent   [][]string // by partition
}

// publishRounds publishes n rounds, each partition's messages at once.
func (f *feed) publishRounds(n int) {
	f.t.Helper()
	if err := f.publishRoundsErr(n); err != nil {
		f.t.Fatal(err)
	}
}

func (f *feed) publishRoundsErr(n int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for p := range f.sent {
		var payloads []string
		for r := f.rounds + 1; r <= f.rounds+n; r++ {
			payloads = append(payloads, fmt.Sprintf("p%d-%d", p, r))
		}
		if err := f.publish(p, payloads...); err != nil {
			return err
		}
		f.sent[p] = append(f.sent[p], payloads...)
	}
	f.rounds += n
	return nil
}

// keepPublishing publishes a round every 20 ms until the returned function
// is called, or the test ends.
func (f *feed) keepPublishing() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			if err := f.publishRoundsErr(1); err != nil {
				f.t.Errorf("publishing: %v", err)
				return
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	stop = sync.OnceFunc(func() {
		close(done)
		wg.Wait()
	})
	f.t.Cleanup(stop)
	return stop
}

// expectAll publishes a last round, waits until the page has it, and
// checks that the page recorded every message published, each once, in
// each partition's order, and no other event.
func (f *feed) expectAll(pg *page) {
	f.t.Helper()
	f.publishRounds(1)
	f.mu.Lock()
	want := make([][]string, len(f.sent))
	for p := range f.sent {
		want[p] = slices.Clone(f.sent[p])
	}
	f.mu.Unlock()

	var got [][]string
	var others []record
	var rs []record
	poll.Until(f.t, waitFor, "the page has the last message of every partition", func() bool {
		rs = pg.recorded()
		if closedForGood(rs) {
			f.t.Fatalf("the page's EventSource failed for good (readyState CLOSED)")
		}
		got, others = byPartition(rs, len(want))
		for p := range want {
			if !slices.Contains(got[p], want[p][len(want[p])-1]) {
				return false
			}
		}
		return true
	})
	for _, r := range others {
		f.t.Errorf("the page recorded %v, not a message of the stream", r)
	}
	for p := range want {
		if i := firstDifference(got[p], want[p]); i >= 0 {
			f.t.Errorf("partition %d: the page recorded %d messages, %d were published; from #%d on, recorded %v, published %v",
				p, len(got[p]), len(want[p]), i, window(got[p], i), window(want[p], i))
		}
	}
}

// partitionRE parses the messages of a feed.
var partitionRE = regexp.MustCompile(`^p(\d+)-\d+$`)

// byPartition returns the data of the feed's messages in rs, by partition,
// and the events that are not messages of the feed, or have no ID.
func byPartition(rs []record, partitions int) (got [][]string, others []record) {
	got = make([][]string, partitions)
	for _, r := range rs {
		if r.Kind != "event" {
			continue
		}
		m := partitionRE.FindStringSubmatch(r.Data)
		p := -1
		if m != nil {
			p, _ = strconv.Atoi(m[1])
		}
		if r.Type != "message" || r.ID == "" || p < 0 || p >= partitions {
			others = append(others, r)
			continue
		}
		got[p] = append(got[p], r.Data)
	}
	return got, others
}

// firstDifference returns the first index at which a and b differ, or -1.
func firstDifference(a, b []string) int {
	for i := range max(len(a), len(b)) {
		if i >= len(a) || i >= len(b) || a[i] != b[i] {
			return i
		}
	}
	return -1
}

// window returns up to 5 elements of s from i.
func window(s []string, i int) []string {
	return s[min(i, len(s)):min(i+5, len(s))]
}

// tail returns the end of a long stream body, for messages.
func tail(s string) string {
	const max = 2000
	if len(s) > max {
		return "...\n" + s[len(s)-max:]
	}
	return s
}
