package e2e

// Three esbridge instances behind HAProxy, restarted one after the other
// while clients read and messages keep coming.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
	"github.com/esbridge/esbridge/internal/progtest"
	"github.com/esbridge/esbridge/internal/ssetest"
)

// lbClients is how many clients TestRollingDeploy runs, unless
// E2E_LB_CLIENTS says otherwise.
const lbClients = 400

// lbRate is how many messages a second each route is published.
const lbRate = 50

// lbCatchUp is the routes' bound on catch-up readers (catchup=N).
const lbCatchUp = 3

// A rolling deploy behind a real load balancer: three esbridge instances,
// each with a JetStream route and a Kafka route (6 partitions), behind
// HAProxy with health checks on /readyz (the configuration of
// docs/operations.md). Clients read through HAProxy, half on each route,
// and reconnect as browsers do: after the retry time the stream last
// sent, with Last-Event-ID. While both routes are published 50 messages a
// second, each instance in turn gets SIGTERM, drains, exits, and is
// started again on its port; the next goes once HAProxy sees it up.
//
// Every client gets every message exactly once, in order per partition,
// with no gap event and never a status other than 200 (a browser would
// stop for good); every client was moved at least once; and no instance
// had more catch-up readers on a route than the route's bound, read from
// its admin port. Once every instance is down, HAProxy answers a stream
// with a retry line rather than a 503. The test logs, for each step, the
// times at which the clients moved had a stream again and every message
// published before the instance exited, and each instance's peak
// resident memory (VmHWM).
//
// E2E_LB_CLIENTS sets the number of clients (400 by default); the figures
// of docs/performance.md are from 3,000.
func TestRollingDeploy(t *testing.T) {
	haproxyPath(t) // before starting anything
	n := lbClients
	if v := os.Getenv("E2E_LB_CLIENTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 2 {
			t.Fatalf("E2E_LB_CLIENTS=%q: want a number of clients, 2 or more", v)
		}
	}
	jsURL, jsPublish := newJetStream(t)
	kafkaURL, kafkaPublish := newKafkaTopic(t)
	routes := []*lbRoute{
		{path: "/js", partitions: 1, publish: jsPublish},
		{path: "/kafka", partitions: 6, publish: kafkaPublish},
	}

	bin := lbBinary(t)
	catchUp := "&catchup=" + strconv.Itoa(lbCatchUp) // the URLs have a query
	instances := make([]*lbInstance, 3)
	var servers []string
	for i := range instances {
		in := &lbInstance{
			t: t, bin: bin,
			addr:  "127.0.0.1:" + strconv.Itoa(brokertest.StablePort(t)),
			admin: "127.0.0.1:" + strconv.Itoa(brokertest.StablePort(t)),
		}
		in.args = []string{"-listen", in.addr, "-admin-listen", in.admin,
			"-route", "/js=" + jsURL + catchUp, "-route", "/kafka=" + kafkaURL + catchUp}
		in.start()
		instances[i] = in
		servers = append(servers, in.addr)
	}
	proxy := startHAProxy(t, n, servers)
	for i := range instances {
		proxy.waitState(i, "UP")
	}

	// The catch-up readers of each instance, scraped all along.
	scrapeCtx, stopScraping := context.WithCancel(context.Background())
	var scraping sync.WaitGroup
	for _, in := range instances {
		scraping.Go(func() { in.scrape(scrapeCtx) })
	}
	defer func() { stopScraping(); scraping.Wait() }()

	// Messages all along, from before the clients come to the end.
	pubCtx, stopPublishing := context.WithCancel(context.Background())
	var publishing sync.WaitGroup
	pubErrs := make([]error, len(routes))
	for i, r := range routes {
		publishing.Go(func() { pubErrs[i] = r.publishAll(pubCtx) })
	}
	stopPub := sync.OnceFunc(func() { stopPublishing(); publishing.Wait() })
	defer stopPub()

	tr := &http.Transport{
		MaxIdleConnsPerHost: n, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	clientCtx, stopClients := context.WithCancel(context.Background())
	var reading sync.WaitGroup
	defer func() { stopClients(); reading.Wait() }()
	clients := make([]*lbClient, n)
	began := time.Now()
	for i := range clients {
		r := routes[i%len(routes)]
		c := &lbClient{route: r, got: make([]int, r.partitions)}
		clients[i] = c
		reading.Go(func() { c.run(clientCtx, hc, proxy.URL(r.path)) })
	}
	heads := func() [][]int {
		var h [][]int
		for _, r := range routes {
			h = append(h, r.head())
		}
		return h
	}
	// waitHead waits until every client has every message of head and a
	// stream open, and returns when those that opened a stream since since
	// (all, if none did) had, after since; or says which clients do not.
	waitHead := func(what string, head [][]int, since time.Time) (arrivals, error) {
		at := make([]time.Duration, len(clients))
		var behind, last []string
		var failed error
		ok := poll.Wait(60*time.Second, func() bool {
			behind = behind[:0]
			for i, c := range clients {
				if err := c.failed(); err != nil {
					failed = fmt.Errorf("client %d of %s: %w", i, c.route.path, err)
					return true
				}
				if at[i] > 0 {
					continue
				}
				if s := c.behind(head[i%len(routes)]); s != "" {
					if len(behind) < 3 {
						behind = append(behind, fmt.Sprintf("client %d of %s: %s", i, c.route.path, s))
					}
					continue
				}
				at[i] = time.Since(since)
			}
			if len(behind) > 0 {
				last = slices.Clone(behind)
			}
			return len(behind) == 0
		})
		switch {
		case failed != nil:
			return arrivals{}, failed
		case !ok:
			return arrivals{}, fmt.Errorf("after 60s, clients still miss messages %s:\n%s", what, strings.Join(behind, "\n"))
		}
		var moved []time.Duration
		for i, c := range clients {
			if c.streamedSince(since) {
				moved = append(moved, at[i])
			}
		}
		if len(moved) == 0 {
			moved = at
		}
		slices.Sort(moved)
		return arrivals{n: len(moved), p50: moved[len(moved)/2], p99: moved[len(moved)*99/100], max: moved[len(moved)-1], last: last}, nil
	}
	mustHead := func(what string, head [][]int, since time.Time) arrivals {
		t.Helper()
		a, err := waitHead(what, head, since)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	streams := func() int {
		s := 0
		for _, c := range clients {
			s += c.streamCount()
		}
		return s
	}
	poll.Until(t, 60*time.Second, "every client has a stream", func() bool {
		for _, c := range clients {
			if c.streamCount() == 0 {
				return false
			}
		}
		return true
	})
	t.Logf("through HAProxy: %v", mustHead("before the deploy", heads(), began))

	// The rolling deploy.
	for i, in := range instances {
		before := streams()
		t0 := time.Now()
		in.peak()
		in.proc.Signal(syscall.SIGTERM)
		if code := in.proc.Wait(progtest.Timeout); code != 0 {
			t.Fatalf("esbridge %d exited with status %d after SIGTERM", i, code)
		}
		exited := time.Since(t0)
		head := heads()
		type result struct {
			a   arrivals
			err error
		}
		back := make(chan result, 1)
		go func() {
			a, err := waitHead(fmt.Sprintf("published before esbridge %d exited", i), head, t0)
			back <- result{a, err}
		}()
		proxy.waitState(i, "DOWN")
		in.start()
		proxy.waitState(i, "UP")
		up := time.Since(t0)
		res := <-back
		if res.err != nil {
			t.Fatal(res.err)
		}
		t.Logf("esbridge %d: exited %v after SIGTERM, up again in HAProxy after %v; of the clients moved, %v; %d streams opened meanwhile",
			i, exited.Round(time.Millisecond), up.Round(time.Millisecond), res.a, streams()-before)
		if res.a.max > 10*time.Second {
			t.Logf("the last clients, shortly before they were at the head:\n%s", strings.Join(res.a.last, "\n"))
		}
	}

	stopPub()
	if err := errors.Join(pubErrs...); err != nil {
		t.Fatal(err)
	}
	final := heads()
	mustHead("at the end", final, time.Now())
	stopClients()
	reading.Wait()
	for i, c := range clients {
		if err := c.failed(); err != nil {
			t.Errorf("client %d of %s: %v", i, c.route.path, err)
		}
		if c.streamCount() < 2 {
			t.Errorf("client %d of %s was never moved: %d stream", i, c.route.path, c.streamCount())
		}
	}
	var breaks int
	for _, c := range clients {
		breaks += c.breakCount()
	}
	for k, r := range routes {
		total := 0
		for _, v := range final[k] {
			total += v
		}
		t.Logf("%s: %d messages in %d partitions, each to every one of its %d clients", r.path, total, r.partitions, n/len(routes))
	}
	t.Logf("%d streams in all for %d clients; %d ended by a network error rather than cleanly", streams(), n, breaks)

	stopScraping()
	scraping.Wait()
	for i, in := range instances {
		in.peak()
		in.proc.Signal(syscall.SIGTERM)
		if code := in.proc.Wait(progtest.Timeout); code != 0 {
			t.Errorf("esbridge %d exited with status %d after SIGTERM", i, code)
		}
		t.Logf("esbridge %d: peak resident memory (VmHWM) of each run: %v MiB; most catch-up readers at once: %v; most clients waiting for one: %v; clients caught up from the broker in each run: %v",
			i, in.peaks, in.maxReaders, in.maxWaiting, in.catchUps)
		for route, m := range in.maxReaders {
			if m > lbCatchUp {
				t.Errorf("esbridge %d had %d catch-up readers on %s at once, over the route's bound of %d", i, m, route, lbCatchUp)
			}
		}
	}

	// With every instance down, HAProxy answers a stream with a retry
	// line, and anything else with 503.
	for i := range instances {
		proxy.waitState(i, "DOWN")
	}
	for _, accept := range []string{"text/event-stream", ""} {
		code, body, header := get(t, proxy.URL("/js"), http.Header{"Accept": {accept}})
		want := http.StatusServiceUnavailable
		if accept != "" {
			want = http.StatusOK
			ms, ok := strings.CutPrefix(body, "retry: ")
			ms, ok2 := strings.CutSuffix(ms, "\n\n")
			n, err := strconv.Atoi(ms)
			if ct := header.Get("Content-Type"); ct != "text/event-stream" || !ok || !ok2 || err != nil || n < 5000 || n >= 15000 {
				t.Errorf("GET /js with every instance down: %s %q, want text/event-stream and a retry line of 5000 to 14999 ms", ct, body)
			}
		}
		if code != want {
			t.Errorf("GET /js (Accept: %q) with every instance down: status %d, want %d", accept, code, want)
		}
	}
}

// arrivals are the times at which clients had every message of a head.
type arrivals struct {
	n             int // clients
	p50, p99, max time.Duration
	last          []string // the last to arrive, a poll before they did
}

// String returns the median, 99th percentile and maximum.
func (a arrivals) String() string {
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
	return fmt.Sprintf("%d clients at the head after %v (median), %v (p99), %v (all)", a.n, r(a.p50), r(a.p99), r(a.max))
}

// get does a GET of url with header, and returns the status, the body and
// the header of the response; an error fails t.
func get(t *testing.T, url string, header http.Header) (int, string, http.Header) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), progtest.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	maps.Copy(req.Header, header)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body), resp.Header
}

// lbBinary returns the esbridge binary of TestRollingDeploy: with the race
// detector if the test runs with it, else without, for figures.
func lbBinary(t *testing.T) string {
	if raceEnabled {
		return binary(t)
	}
	return plainBuild.Path(t)
}

// plainBuild is the esbridge program without the race detector, built at
// first use.
var plainBuild = &progtest.Build{}

// An lbRoute is a route of the instances, and the messages published to
// it: "p<partition>-<n>", n from 1 in each partition.
type lbRoute struct {
	path       string
	partitions int
	publish    func(partition int, payloads ...string) error

	mu        sync.Mutex
	published []int // by partition, the last n published
}

// publishAll publishes lbRate messages a second, to the partitions in
// turn, until ctx ends. It publishes ten times a second what is due, a
// batch per partition, so that the rate holds however long a publish
// takes.
func (r *lbRoute) publishAll(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	r.mu.Lock()
	r.published = make([]int, r.partitions)
	r.mu.Unlock()
	began := time.Now()
	sent := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		due := int(time.Since(began).Seconds()*lbRate) - sent
		next := r.head()
		batches := make([][]string, r.partitions)
		for range due {
			p := sent % r.partitions
			next[p]++
			batches[p] = append(batches[p], fmt.Sprintf("p%d-%d", p, next[p]))
			sent++
		}
		for p, batch := range batches {
			if len(batch) == 0 {
				continue
			}
			if err := r.publish(p, batch...); err != nil {
				return err
			}
			r.mu.Lock()
			r.published[p] = next[p]
			r.mu.Unlock()
		}
	}
}

// head returns the last n published to each partition.
func (r *lbRoute) head() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := make([]int, r.partitions)
	copy(h, r.published)
	return h
}

// An lbClient reads a route through HAProxy as a browser's EventSource
// does, and checks each message as it comes.
type lbClient struct {
	route *lbRoute

	mu      sync.Mutex
	got     []int  // by partition, the last n received
	lastID  string // as EventSource.lastEventId
	streams int    // responses received
	breaks  int    // streams that ended with an error, not cleanly
	err     error  // what the client saw that it should not have; it stopped there
	// For a failure's message: what the client does, since when.
	state   string
	since   time.Time
	history []string  // the last states, each with its time
	opened  time.Time // when its last stream began
}

// streamedSince reports whether the client's last stream began after t.
func (c *lbClient) streamedSince(t time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.opened.After(t)
}

// set records what the client does from now on, and keeps the last few
// states with their times. c.mu must be held.
func (c *lbClient) set(state string) {
	c.state, c.since = state, time.Now()
	c.history = append(c.history, c.since.Format("15:04:05.000")+" "+state)
	if len(c.history) > 8 {
		c.history = c.history[1:]
	}
}

// run reads url until ctx ends or the client sees something wrong. As a
// browser does, it opens the stream again after each end or network
// error, once the reconnection time has passed (the last retry line's, 3 s
// until one comes), with Last-Event-ID; a status other than 200 ends it.
func (c *lbClient) run(ctx context.Context, hc *http.Client, url string) {
	retry := 3 * time.Second
	for {
		err := c.stream(ctx, hc, url, &retry)
		if ctx.Err() != nil {
			return
		}
		var fatal *lbFatal
		if errors.As(err, &fatal) {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		if err != nil {
			c.mu.Lock()
			c.breaks++
			c.mu.Unlock()
		}
		c.mu.Lock()
		c.set(fmt.Sprintf("waiting %v to reconnect at %v (%v)", retry, c.got, err))
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
	}
}

// An lbFatal is what ends a client: what a browser would not get over, or
// a message missed, duplicated or out of order.
type lbFatal struct{ msg string }

func (e *lbFatal) Error() string { return e.msg }

// stream reads one response, until it ends; it sets retry as the stream's
// retry lines say.
func (c *lbClient) stream(ctx context.Context, hc *http.Client, url string, retry *time.Duration) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return &lbFatal{err.Error()}
	}
	req.Header.Set("Accept", "text/event-stream")
	c.mu.Lock()
	if c.lastID != "" {
		req.Header.Set("Last-Event-ID", c.lastID)
	}
	c.set("connecting")
	c.mu.Unlock()
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return &lbFatal{fmt.Sprintf("status %d %q, body %q: a browser would stop for good", resp.StatusCode, resp.Header.Get("Content-Type"), body)}
	}
	c.mu.Lock()
	c.streams++
	c.set(fmt.Sprintf("reading a stream of %s from %v", resp.Header.Get("X-Server"), c.got))
	c.opened = c.since
	c.mu.Unlock()
	p := ssetest.NewParser()
	buf := make([]byte, 16<<10)
	for {
		k, err := resp.Body.Read(buf)
		for _, ev := range p.Feed(buf[:k]) {
			if ferr := c.take(ev); ferr != nil {
				return ferr
			}
		}
		if p.Retry >= 0 {
			*retry = time.Duration(p.Retry) * time.Millisecond
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// take checks ev, the next event of the client's stream, and records it.
func (c *lbClient) take(ev ssetest.Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ev.LastEventID != "" {
		c.lastID = ev.LastEventID
	}
	if ev.Type != "message" {
		return &lbFatal{fmt.Sprintf("event of type %q, data %q, after %v", ev.Type, ev.Data, c.got)}
	}
	ps, ns, ok := strings.Cut(strings.TrimPrefix(ev.Data, "p"), "-")
	p, perr := strconv.Atoi(ps)
	n, nerr := strconv.Atoi(ns)
	if !ok || perr != nil || nerr != nil || p < 0 || p >= len(c.got) {
		return &lbFatal{fmt.Sprintf("data %q is no message of the test", ev.Data)}
	}
	if n != c.got[p]+1 {
		return &lbFatal{fmt.Sprintf("got %q after p%d-%d: a message twice, or one skipped", ev.Data, p, c.got[p])}
	}
	c.got[p] = n
	return nil
}

// failed returns what ended the client, if anything.
func (c *lbClient) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// behind describes what the client lacks of head, or of a stream open
// (a client whose stream ended is not back until it has one), or returns
// "".
func (c *lbClient) behind(head []int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	describe := func(why string) string {
		return fmt.Sprintf("%s: has %v of %v, %d streams, last ID %q; %s for %v; lately:\n\t%s", why, c.got, head, c.streams, c.lastID, c.state, time.Since(c.since).Round(time.Millisecond), strings.Join(c.history, "\n\t"))
	}
	for p, h := range head {
		if c.got[p] < h {
			return describe("behind")
		}
	}
	if c.opened.IsZero() || c.opened.Before(c.since) {
		return describe("no stream")
	}
	return ""
}

func (c *lbClient) streamCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams
}

func (c *lbClient) breakCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.breaks
}

// An lbInstance is an esbridge instance behind HAProxy, on ports of its
// own that it keeps across restarts.
type lbInstance struct {
	t     *testing.T
	bin   string
	addr  string // its public listener
	admin string // its admin listener
	args  []string
	proc  *progtest.Proc // the current run

	mu         sync.Mutex
	peaks      []int          // VmHWM of each run, MiB
	maxReaders map[string]int // by route, the most catch-up readers seen at once
	maxWaiting map[string]int // by route, the most clients waiting for one
	// By run and route, the last catch-ups (esbridge_catchups_total) seen.
	catchUps []map[string]int
}

// start starts a run of the instance and waits until it is ready.
func (in *lbInstance) start() {
	in.t.Helper()
	in.mu.Lock()
	in.catchUps = append(in.catchUps, make(map[string]int))
	in.mu.Unlock()
	in.proc = progtest.Listen(in.t, in.bin, in.args)
	in.proc.WaitReadyz(http.StatusOK)
}

// peak records the peak resident memory of the current run, which must
// still be running.
func (in *lbInstance) peak() {
	in.t.Helper()
	status, err := os.ReadFile("/proc/" + strconv.Itoa(in.proc.Pid()) + "/status")
	if err != nil {
		in.t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				in.t.Fatalf("VmHWM: %q: %v", line, err)
			}
			in.mu.Lock()
			in.peaks = append(in.peaks, kb>>10)
			in.mu.Unlock()
			return
		}
	}
	in.t.Fatalf("no VmHWM in /proc/%d/status", in.proc.Pid())
}

// scrape reads the instance's metrics every 100 ms until ctx ends, and
// keeps the most catch-up readers and waiting clients seen per route.
// While the instance is down there is nothing to read.
func (in *lbInstance) scrape(ctx context.Context) {
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := hc.Get("http://" + in.admin + "/metrics")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			in.record(sc.Text())
		}
		resp.Body.Close()
	}
}

// record keeps the value of line, a metric of the text format, if it is
// a catch-up gauge and the most seen, or the catch-ups counter.
func (in *lbInstance) record(line string) {
	in.mu.Lock()
	run := &in.catchUps[len(in.catchUps)-1]
	in.mu.Unlock()
	for name, m := range map[string]*map[string]int{
		"esbridge_catchup_readers": &in.maxReaders,
		"esbridge_catchup_waiting": &in.maxWaiting,
		"esbridge_catchups_total":  run,
	} {
		rest, ok := strings.CutPrefix(line, name+`{route="`)
		if !ok {
			continue
		}
		route, value, ok := strings.Cut(rest, `"} `)
		v, err := strconv.ParseFloat(value, 64)
		if !ok || err != nil {
			continue
		}
		in.mu.Lock()
		if *m == nil {
			*m = make(map[string]int)
		}
		(*m)[route] = max((*m)[route], int(v))
		in.mu.Unlock()
	}
}
