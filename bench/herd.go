// Scenario H, "herd": a fresh esbridge instance (its log empty, as after a
// deploy, -herd-backlog 1024) meets -herd-clients SSE clients that each
// resume -herd-back messages back, all at once, while the stream goes on
// at -herd-rate messages/s. On JetStream (a nats-server embedded in the
// orchestrator), Kafka with 1 and with 6 partitions (-kafka-brokers),
// RabbitMQ stream queues (-amqp-url); each with every client at the same
// resume point, and with resume points spread evenly over the -herd-back
// messages (-herd-spread).
//
// The esbridge instance is a child process (-role=herd-server) that
// builds its bridge from a route URL as cmd/esbridge does (the route
// options, catchup=N among them, then the source's own URL), logs as
// esbridge does (text, level info) to a file, and serves on 127.0.0.1.
// The clients are another child (-role=herd-client, herdclient.go); the
// producer, the embedded nats-server and the samplers are in the
// orchestrator, so the server's memory is the bridge's alone.
//
// Each run, on a fresh stream:
//
//  1. -herd-back messages are produced ("TS I P K x…", -size bytes:
//     produce time, index, partition, sequence in the partition), then
//     -herd-rate a second until the end of the run.
//  2. A probe client reads the stream from its start (a route with
//     start=earliest, no Last-Event-ID, as a browser's first visit)
//     through a first instance and records every event's ID; that
//     instance is stopped.
//  3. A fresh instance starts; a second later, with the head at H0, the
//     clients resume all at once with the ID of message H0-back (or of
//     messages spread over H0-back … H0).
//  4. Until every client has every message up to H0 (or -herd-timeout):
//     the most readers the bridge had open on its source at once (the
//     live one and the catch-up readers, counted by a wrapper of the
//     source in the server process) and its Open calls; every 100 ms (or
//     as fast as the count comes) the broker's view (JetStream: the
//     stream's consumer count; Kafka: the bridge process's established
//     TCP connections to the brokers, a connection per partition per
//     reader and kafka-go's metadata connections; RabbitMQ: the stream
//     queue's consumer count from rabbitmqctl, seconds a call) and the
//     bridge process's RSS; then its VmHWM. Each client checks that it
//     gets every message after its resume point once, in order, in each
//     partition.
//     With -profile, the server's CPU profile of the herd, a heap
//     profile 3 s in, its goroutines when the broker's count peaks, and
//     the count over time go to that directory, with the logs.
//  5. The producer stops; the clients must get the rest; then a plain
//     consumer of the broker's Go client reads -herd-back messages: the
//     baseline.
//
// -herd-extra adds three small measurements on JetStream (herdextra.go).

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/routeurl"
)

// herdOptions are the flags of scenario H.
type herdOptions struct {
	clients  int
	back     int
	rate     int
	backlog  int
	catchup  int
	size     int
	spread   string
	brokers  string
	extra    string
	runs     int
	timeout  time.Duration
	routeURL string // internal: the route of a herd-server process
}

func herdFlags(h *herdOptions) {
	flag.IntVar(&h.clients, "herd-clients", 2000, "scenario H: clients resuming at once")
	flag.IntVar(&h.back, "herd-back", 10000, "scenario H: messages back from the head that each client resumes")
	flag.IntVar(&h.rate, "herd-rate", 100, "scenario H: messages/s produced while the herd catches up")
	flag.IntVar(&h.backlog, "herd-backlog", 1024, "scenario H: the bridge's -backlog")
	flag.IntVar(&h.catchup, "herd-catchup", 0, "scenario H: the route's catchup=N (0: the default)")
	flag.IntVar(&h.size, "herd-size", 100, "scenario H: message size in bytes")
	flag.StringVar(&h.spread, "herd-spread", "both", "scenario H: resume points all at -herd-back (off), spread evenly over the -herd-back messages (on), or both")
	flag.StringVar(&h.brokers, "herd-brokers", "jetstream,kafka1,kafka6,rabbitmq", "scenario H: brokers, comma-separated (jetstream, kafka1, kafka6, rabbitmq); empty for none")
	flag.StringVar(&h.extra, "herd-extra", "abc", "scenario H: extra measurements on JetStream: a (900 KB Last-Event-IDs and a live client's latency), b (1,000 resume-and-hang-up cycles), c (30 non-reading clients resuming from the start, 64 KB messages)")
	flag.IntVar(&h.runs, "herd-runs", 1, "scenario H: runs of each broker and variant")
	flag.DurationVar(&h.timeout, "herd-timeout", 2*time.Minute, "scenario H: the longest a herd may take to catch up")
	flag.StringVar(&h.routeURL, "herd-url", "", "internal: the route URL of a herd-server process")
}

// The server process.

// runHerdServer serves one route at /events, built from routeURL as
// cmd/esbridge builds a -route, and answers "prof" (CPU profile on or
// off; the reply is its CPU time) and "mem" (a heap profile to
// HeapProfile, without forcing a collection; the reply is its memory).
func runHerdServer(routeURL string, backlog int) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var src *countingSource
	rs, err := openRoute(routeURL, backlog, logger, func(inner bridge.Source) bridge.Source {
		src = &countingSource{Source: inner}
		return src
	})
	if err != nil {
		return err
	}
	defer rs.close()
	b := rs.b
	for deadline := time.Now().Add(30 * time.Second); !b.Ready(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return errors.New("bridge not ready in 30s")
		}
	}
	addr, err := rs.listen()
	if err != nil {
		return err
	}
	r := replier{enc: json.NewEncoder(os.Stdout)}
	r.reply(hello{HTTP: addr})
	var s serverProc
	for c := range commands {
		switch c.Cmd {
		case "prof":
			r.reply(s.prof(c))
		case "readers": // the readers open on the source; On resets the maximum
			r.reply(src.count(c.On))
		case "stacks": // the goroutines, aggregated, to HeapProfile
			if f, err := os.Create(c.HeapProfile); err == nil {
				_ = pprof.Lookup("goroutine").WriteTo(f, 1)
				f.Close()
			}
			r.reply(struct{}{})
		case "mem":
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if c.HeapProfile != "" {
				if f, err := os.Create(c.HeapProfile); err == nil {
					_ = pprof.Lookup("heap").WriteTo(f, 0)
					f.Close()
				}
			}
			rss, _ := vmRSS()
			r.reply(memResult{HeapInuse: ms.HeapInuse, StackInuse: ms.StackInuse, Sys: ms.Sys, RSS: rss, Goroutines: runtime.NumGoroutine()})
		default:
			r.fail(fmt.Errorf("unknown command %q", c.Cmd))
		}
	}
	return nil // stdin closed: rs.close stops the bridge as esbridge does
}

// A routeServer is a bridge serving one route of a broker at /events, as
// the esbridge program would: the server process of scenarios H and V.
type routeServer struct {
	b      *bridge.Bridge
	src    bridge.Source
	cancel context.CancelFunc
	ran    chan struct{}
}

// openRoute opens the source of routeURL, wrapped by wrap if not nil, and
// runs a bridge on it.
func openRoute(routeURL string, backlog int, logger *slog.Logger, wrap func(bridge.Source) bridge.Source) (*routeServer, error) {
	u, err := url.Parse(routeURL)
	if err != nil {
		return nil, err
	}
	opts, rest, err := bridge.ParseOptions(u.Query())
	if err != nil {
		return nil, err
	}
	src, err := routeurl.OpenSource(u, rest, logger.With("route", "/events"))
	if err != nil {
		return nil, err
	}
	served := src
	if wrap != nil {
		served = wrap(src)
	}
	b, err := bridge.New(bridge.Config{Backlog: backlog, ConnTakeover: true, Logger: logger}, bridge.Route{Path: "/events", Source: served, Options: opts})
	if err != nil {
		src.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	rs := &routeServer{b: b, src: src, cancel: cancel, ran: make(chan struct{})}
	go func() {
		defer close(rs.ran)
		_ = b.Run(ctx)
	}()
	return rs, nil
}

// listen serves the bridge over HTTP on a loopback port, with the
// program's server limits, and returns its address.
func (rs *routeServer) listen() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	hs := &http.Server{Handler: rs.b, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10} // as cmd/esbridge
	go func() { _ = hs.Serve(ln) }()
	return ln.Addr().String(), nil
}

// close stops the bridge as esbridge does, so that the source deletes its
// consumers, and closes the source.
func (rs *routeServer) close() {
	sctx, scancel := context.WithTimeout(context.Background(), time.Second)
	defer scancel()
	_ = rs.b.Shutdown(sctx)
	rs.cancel()
	<-rs.ran
	rs.src.Close()
}

// An esbridgeProc is a herd-server child and its log.
type esbridgeProc struct {
	*child
	addr string
	log  string
}

// startESBridge starts a herd server on routeURL, its log to a file in
// dir.
func (o options) startESBridge(dir, tag, routeURL string) (*esbridgeProc, error) {
	logPath := filepath.Join(dir, tag+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		lf.Close()
		return nil, err
	}
	cmd := exec.Command(exe, "-role=herd-server", "-herd-url="+routeURL, fmt.Sprint("-backlog=", o.herd.backlog))
	cmd.Stderr = lf
	if o.verbose {
		cmd.Stderr = io.MultiWriter(lf, os.Stderr)
	}
	c, err := startCmd("esbridge "+tag, cmd)
	lf.Close() // the child has its own descriptor
	if err != nil {
		return nil, err
	}
	var h hello
	if err := c.call(command{}, &h, 40*time.Second); err != nil {
		c.kill()
		return nil, fmt.Errorf("%w (log: %s)", err, logTail(logPath))
	}
	return &esbridgeProc{child: c, addr: h.HTTP, log: logPath}, nil
}

// startCmd starts cmd as a child speaking the orchestrator's protocol.
func startCmd(name string, cmd *exec.Cmd) (*child, error) {
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{name: name, cmd: cmd, stdin: stdin, lines: make(chan []byte, 1)}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			c.lines <- append([]byte(nil), sc.Bytes()...)
		}
	}()
	return c, nil
}

func (p *esbridgeProc) pid() int { return p.cmd.Process.Pid }

// stop ends the process as a deploy would: it closes its stdin, on which
// the process shuts down and closes its source, and kills it if it has
// not exited within 10 s.
func (p *esbridgeProc) stop() {
	_ = p.stdin.Close()
	exited := make(chan struct{})
	go func() {
		_ = p.cmd.Wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-exited
	}
}

// logTail returns the last line of a log file.
func logTail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// logWarnings counts the WARN and ERROR lines of an esbridge log and
// returns the distinct messages, with their counts.
func logWarnings(path string) (int, string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, ""
	}
	n := 0
	counts := map[string]int{}
	var order []string
	for line := range strings.Lines(string(b)) {
		if !strings.Contains(line, "level=WARN") && !strings.Contains(line, "level=ERROR") {
			continue
		}
		n++
		msg := line
		if i := strings.Index(line, "msg="); i >= 0 {
			msg = line[i+4:]
			if strings.HasPrefix(msg, `"`) {
				if j := strings.Index(msg[1:], `"`); j >= 0 {
					msg = msg[1 : j+1]
				}
			} else if j := strings.IndexByte(msg, ' '); j >= 0 {
				msg = msg[:j]
			}
		}
		if counts[msg] == 0 {
			order = append(order, msg)
		}
		counts[msg]++
	}
	var parts []string
	for _, m := range order {
		parts = append(parts, fmt.Sprintf("%d× %q", counts[m], m))
	}
	return n, strings.Join(parts, ", ")
}

// procStatus returns a field of /proc/PID/status in bytes (VmHWM, VmRSS).
func procStatus(pid int, field string) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// A sampler samples the broker readers of a route and the bridge
// process's RSS every 100 ms.
type sampler struct {
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	readers  int // latest
	max      int
	over     int // samples above 8
	samples  int
	ok       int
	errs     int
	firstErr string
	maxRSS   uint64
	series   []string // "time count" at each change of the count
}

func startSampler(hb herdBroker, stream string, pid int) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	var wg sync.WaitGroup
	every := func(f func()) {
		wg.Go(func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				f()
				select {
				case <-s.stop:
					return
				case <-t.C:
				}
			}
		})
	}
	every(func() { // a slow count (rabbitmqctl) samples less often
		n, err := hb.readers(stream, pid)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.samples++
		if err != nil {
			s.errs++
			if s.firstErr == "" {
				s.firstErr = err.Error()
			}
			return
		}
		s.ok++
		if n != s.readers || len(s.series) == 0 {
			s.series = append(s.series, fmt.Sprintf("%s %d", time.Now().Format("15:04:05.000"), n))
		}
		s.readers = n
		s.max = max(s.max, n)
		if n > 8 {
			s.over++
		}
	})
	every(func() {
		rss := procStatus(pid, "VmRSS")
		s.mu.Lock()
		s.maxRSS = max(s.maxRSS, rss)
		s.mu.Unlock()
	})
	go func() {
		wg.Wait()
		close(s.done)
	}()
	return s
}

// settle waits up to d for n more successful samples of the readers.
func (s *sampler) settle(n int, d time.Duration) {
	s.mu.Lock()
	want := s.ok + n
	s.mu.Unlock()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		s.mu.Lock()
		ok := s.ok
		s.mu.Unlock()
		if ok >= want {
			return
		}
	}
}

func (s *sampler) current() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readers
}

// reset forgets the maxima so far.
func (s *sampler) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.max, s.over, s.maxRSS = s.readers, 0, 0
}

func (s *sampler) end() {
	close(s.stop)
	<-s.done
}

// The orchestrator.

// herdRun is the result of one herd.
type herdRun struct {
	Broker         string        `json:"broker"`
	Spread         bool          `json:"spread"`
	Clients        int           `json:"clients"`
	Back           int           `json:"back"`
	Error          string        `json:"error,omitempty"`
	Head           uint64        `json:"head"`   // H0
	Resume         string        `json:"resume"` // resume indexes
	Report         herdReport    `json:"report"`
	Unit           string        `json:"unit"`
	ReadersBefore  int           `json:"readersBefore"` // live only, before the herd
	ReadersMax     int           `json:"readersMax"`
	ReadersOver    int           `json:"readersOverSamples"` // samples above 8
	ReadersSamples int           `json:"readersSamples"`
	ReadersErr     string        `json:"readersError,omitempty"`
	BridgeBefore   int           `json:"bridgeReadersBefore"` // the source's open readers, counted in the bridge process
	BridgeMax      int           `json:"bridgeReadersMax"`
	BridgeOpens    int           `json:"bridgeReaderOpens"` // Open calls during the herd
	HWM            uint64        `json:"vmHWM"`
	RSSBefore      uint64        `json:"rssBefore"`
	Plain          time.Duration `json:"plain"`
	PlainErr       string        `json:"plainError,omitempty"`
	Warnings       int           `json:"warnings"`
	WarningText    string        `json:"warningText,omitempty"`
	Log            string        `json:"log"`
	Notes          []string      `json:"notes,omitempty"`
}

// herdResults are scenario H's results.
type herdResults struct {
	Runs  []herdRun  `json:"runs"`
	Extra *herdExtra `json:"extra,omitempty"`
}

// herdBrokers returns the broker configurations of -herd-brokers.
func (o options) herdBrokers() ([]func() (herdBroker, error), []string, error) {
	var fs []func() (herdBroker, error)
	var names []string
	for n := range strings.SplitSeq(o.herd.brokers, ",") {
		n = strings.TrimSpace(n)
		switch n {
		case "":
			continue
		case "jetstream":
			fs = append(fs, func() (herdBroker, error) { return newJSBroker() })
		case "kafka1", "kafka6":
			p, _ := strconv.Atoi(n[5:])
			k := o.kafka
			k.partitions = p
			fs = append(fs, func() (herdBroker, error) { return kafkaHerd{kafkaBroker{k}}, nil })
		case "rabbitmq":
			fs = append(fs, func() (herdBroker, error) { return &amqpHerd{a: amqpBroker{o.amqp}}, nil })
		default:
			return nil, nil, fmt.Errorf("unknown -herd-brokers entry %q", n)
		}
		names = append(names, n)
	}
	return fs, names, nil
}

// herdScenario runs scenario H.
func (o options) herdScenario() *herdResults {
	res := &herdResults{}
	dir := o.profileDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "esbridge-herd-"); err != nil {
			res.Runs = append(res.Runs, herdRun{Error: err.Error()})
			return res
		}
	}
	o.logf("H: logs in %s", dir)
	brokers, names, err := o.herdBrokers()
	if err != nil {
		res.Runs = append(res.Runs, herdRun{Error: err.Error()})
		return res
	}
	var spreads []bool
	switch o.herd.spread {
	case "off":
		spreads = []bool{false}
	case "on":
		spreads = []bool{true}
	default:
		spreads = []bool{false, true}
	}
	for i, mk := range brokers {
		hb, err := mk()
		if err != nil {
			res.Runs = append(res.Runs, herdRun{Broker: names[i], Error: err.Error()})
			continue
		}
		for run := range o.herd.runs {
			for _, spread := range spreads {
				o.logf("H: %s, spread %v, run %d", hb.name(), spread, run+1)
				res.Runs = append(res.Runs, o.herdRun(hb, spread, dir, fmt.Sprintf("%s-%v-%d", names[i], spread, run+1)))
			}
		}
		hb.close()
	}
	if o.herd.extra != "" {
		res.Extra = o.herdExtras(dir)
	}
	return res
}

// probeRec is what the probe had received once it received an event: the
// event's ID, and the last K of each partition.
type probeRec struct {
	id string
	k  []uint64
}

// probe reads the route of the esbridge at addr from the start (the
// route has start=earliest) until it has n messages and, after that, for
// linger more; it records every message's ID.
func probe(addr string, parts, n int, linger, timeout time.Duration) ([]probeRec, []string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var recs []probeRec
	var notes []string
	last := make([]uint64, parts)
	var dups, skipped, noID, gaps int
	var enough time.Time
	err := readSSE(ctx, addr, "/events", nil, 256<<10, nil, func(ev *sseEvent) bool {
		if string(ev.typ) == "gap" {
			gaps++
			return true
		}
		m, ok := parseHerd(ev.data)
		if !ok || m.part >= parts {
			return true
		}
		switch {
		case m.k <= last[m.part]:
			dups++
			return true
		case m.k > last[m.part]+1:
			skipped += int(m.k - last[m.part] - 1)
		}
		last[m.part] = m.k
		if !ev.hasID || len(ev.id) == 0 {
			noID++
		}
		recs = append(recs, probeRec{id: string(ev.id), k: slices.Clone(last)})
		if len(recs) == n {
			enough = time.Now()
		}
		return len(recs) < n || time.Since(enough) < linger
	})
	if dups+skipped+noID+gaps > 0 {
		notes = append(notes, fmt.Sprintf("probe: %d duplicates, %d skipped, %d without ID, %d gaps", dups, skipped, noID, gaps))
	}
	if len(recs) < n {
		return recs, notes, fmt.Errorf("probe: %d of %d messages: %v", len(recs), n, err)
	}
	return recs, notes, nil
}

// herdRun runs one herd on a fresh stream of hb.
func (o options) herdRun(hb herdBroker, spread bool, dir, tag string) (r herdRun) {
	h := o.herd
	r.Broker, r.Spread, r.Clients, r.Back, r.Unit = hb.name(), spread, h.clients, h.back, hb.unit()
	fail := func(err error) herdRun {
		r.Error = err.Error()
		return r
	}
	stream, err := hb.create()
	if err != nil {
		return fail(err)
	}
	defer hb.remove(stream)
	sender, err := hb.producer(stream)
	if err != nil {
		return fail(err)
	}
	defer sender.close()
	feed := newHerdFeed(sender, hb.partitions(), h.size)
	t := time.Now()
	if err := feed.prefill(h.back); err != nil {
		return fail(fmt.Errorf("prefill: %w", err))
	}
	o.logf("H: %d messages produced in %v", h.back, time.Since(t).Round(time.Millisecond))
	feed.live(h.rate, h.timeout+5*time.Minute)
	defer func() {
		if err := feed.stop(); err != nil {
			r.Notes = append(r.Notes, "producer: "+err.Error())
		}
	}()

	base, q := hb.url(stream)
	opt := ""
	if h.catchup > 0 {
		opt = fmt.Sprintf("&catchup=%d", h.catchup)
	}
	first, err := o.startESBridge(dir, tag+"-probe", base+q+"start=earliest"+opt)
	if err != nil {
		return fail(err)
	}
	recs, notes, err := probe(first.addr, hb.partitions(), h.back, 500*time.Millisecond, 2*time.Minute)
	first.stop()
	r.Notes = append(r.Notes, notes...)
	if err != nil {
		return fail(err)
	}
	routeURL := base
	if opt != "" {
		routeURL += q + opt[1:]
	}
	esb, err := o.startESBridge(dir, tag, routeURL)
	if err != nil {
		return fail(err)
	}
	defer esb.kill()
	r.Log = esb.log
	smp := startSampler(hb, stream, esb.pid())
	defer smp.end()
	time.Sleep(time.Second)
	smp.settle(1, 20*time.Second)
	r.ReadersBefore = smp.current()
	r.RSSBefore = procStatus(esb.pid(), "VmRSS")
	smp.reset()

	// The resume points: after message e = H0-back (and up), as the
	// probe's records say.
	h0 := feed.head.Load()
	r.Head = h0
	e := int(h0) - h.back
	if e < 1 {
		e = 1
	}
	if e > len(recs) {
		r.Notes = append(r.Notes, fmt.Sprintf("resume at message %d, the last the probe had, not %d", len(recs), e))
		e = len(recs)
	}
	cmd := herdCmd{Cmd: "herd", URL: esb.addr, Path: "/events", Head: feed.kOf(h0)}
	if spread {
		hi := 0
		for c := range h.clients {
			j := e + c*h.back/h.clients
			if j > len(recs) {
				j = len(recs)
			}
			hi = max(hi, j)
			if len(cmd.IDs) == 0 || cmd.IDs[len(cmd.IDs)-1] != recs[j-1].id {
				cmd.IDs = append(cmd.IDs, recs[j-1].id)
				cmd.Base = append(cmd.Base, recs[j-1].k)
			}
			cmd.Which = append(cmd.Which, len(cmd.IDs)-1)
		}
		r.Resume = fmt.Sprintf("after messages %d…%d of %d", e, hi, h0)
		if hi < int(h0)-1 {
			r.Notes = append(r.Notes, fmt.Sprintf("spread: the probe's last ID was of message %d; clients above it resume there", len(recs)))
		}
	} else {
		cmd.IDs, cmd.Base = []string{recs[e-1].id}, [][]uint64{recs[e-1].k}
		cmd.Which = make([]int, h.clients)
		r.Resume = fmt.Sprintf("after message %d of %d", e, h0)
	}

	cli, err := startChild("herd client", o.verbose, "-role=herd-client")
	if err != nil {
		return fail(err)
	}
	defer cli.kill()
	var none struct{}
	prof := o.profileDir != ""
	if prof {
		var cpu time.Duration
		_ = esb.call(command{Cmd: "prof", On: true, CPUProfile: filepath.Join(dir, tag+".cpu.pprof")}, &cpu, 10*time.Second)
	}
	var rc readerCount
	if err := esb.call(command{Cmd: "readers", On: true}, &rc, 10*time.Second); err != nil {
		return fail(err)
	}
	r.BridgeBefore = rc.Open
	if err := cli.callJSON(cmd, &none, time.Minute); err != nil {
		return fail(err)
	}
	start := time.Now()
	heapTaken := !prof
	stacksAt := 0
	var st herdStatus
	for time.Since(start) < h.timeout {
		time.Sleep(250 * time.Millisecond)
		if err := cli.callJSON(herdCmd{Cmd: "status"}, &st, 30*time.Second); err != nil {
			return fail(err)
		}
		if !heapTaken && time.Since(start) > 3*time.Second {
			var m memResult
			_ = esb.call(command{Cmd: "mem", HeapProfile: filepath.Join(dir, tag+".heap.pprof")}, &m, 30*time.Second)
			heapTaken = true
		}
		if prof {
			// The goroutines when the route has the most broker readers.
			if n := smp.current(); n > stacksAt && n > r.ReadersBefore+4 {
				stacksAt = n
				_ = esb.call(command{Cmd: "stacks", HeapProfile: filepath.Join(dir, tag+".goroutines.txt")}, &none, 30*time.Second)
			}
		}
		if st.Caught+st.Ended >= st.Clients {
			break
		}
	}
	if prof {
		var cpu time.Duration
		_ = esb.call(command{Cmd: "prof"}, &cpu, 10*time.Second)
	}
	if err := esb.call(command{Cmd: "readers"}, &rc, 10*time.Second); err != nil {
		return fail(err)
	}
	r.BridgeMax, r.BridgeOpens = rc.Max, rc.Opens
	smp.settle(1, 20*time.Second) // a sample of the end, however slow
	smp.mu.Lock()
	r.ReadersMax, r.ReadersOver, r.ReadersSamples = smp.max, smp.over, smp.ok
	if smp.errs > 0 {
		r.ReadersErr = fmt.Sprintf("%d of %d samples failed: %s", smp.errs, smp.samples, smp.firstErr)
	}
	smp.mu.Unlock()
	r.HWM = procStatus(esb.pid(), "VmHWM")
	if prof {
		smp.mu.Lock()
		_ = os.WriteFile(filepath.Join(dir, tag+".readers.txt"), []byte(strings.Join(smp.series, "\n")+"\n"), 0o644)
		smp.mu.Unlock()
	}

	// The rest: every client must get every message produced.
	if err := feed.stop(); err != nil {
		r.Notes = append(r.Notes, "producer: "+err.Error())
	}
	final := feed.kOf(feed.head.Load())
	for t := time.Now(); time.Since(t) < 10*time.Second; time.Sleep(250 * time.Millisecond) {
		if err := cli.callJSON(herdCmd{Cmd: "status", Final: final}, &st, 30*time.Second); err != nil || st.Final+st.Ended >= st.Clients {
			break
		}
	}
	if err := cli.callJSON(herdCmd{Cmd: "report", Final: final}, &r.Report, time.Minute); err != nil {
		return fail(err)
	}
	r.Warnings, r.WarningText = logWarnings(esb.log)
	esb.kill()
	cli.kill()
	o.logf("H: plain consumer")
	r.Plain, err = hb.plain(stream, h.back)
	if err != nil {
		r.PlainErr = err.Error()
	}
	return r
}

// printHerd writes scenario H's tables.
func printHerd(out io.Writer, o options, hr *herdResults) {
	h := o.herd
	catchup := "default"
	if h.catchup > 0 {
		catchup = strconv.Itoa(h.catchup)
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(cells ...any) {
		for _, c := range cells {
			fmt.Fprint(tw, c, "\t")
		}
		fmt.Fprintln(tw)
	}
	if len(hr.Runs) > 0 {
		fmt.Fprintf(out, "\nH. Herd: a fresh esbridge (-backlog %d, catchup %s) meets %d clients resuming %d messages back at once, %d-byte messages, %d/s produced meanwhile\n",
			h.backlog, catchup, h.clients, h.back, h.size, h.rate)
		fmt.Fprintln(out, "   readers: the route's broker readers, max over 100 ms samples during the herd (live only before it); caught up: has every message up to the head at the herd's start; times from the herd's start")
		fmt.Fprintln(out, "   bridge readers: readers open on the source, counted in the bridge process (live + catch-up), before and max during the herd, and the Open calls during it")
		row("broker", "resume", "gap clients", "dups", "skipped", "missing", "errors", "bridge readers", "opens", "broker readers before", "max", "peak RSS (VmHWM)", "all caught up", "p50", "p99", "plain consumer", "warnings", "note")
		for _, r := range hr.Runs {
			variant := "same"
			if r.Spread {
				variant = "spread"
			}
			if r.Error != "" {
				row(r.Broker, variant, "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "error: "+r.Error)
				continue
			}
			rp := r.Report
			all := "-"
			if rp.Caught == rp.Clients && rp.Clients > 0 {
				all = secs(rp.Max)
			} else {
				all = fmt.Sprintf("%d/%d in %v", rp.Caught, rp.Clients, h.timeout)
			}
			plain := secs(r.Plain)
			if r.PlainErr != "" {
				plain = "error"
			}
			var notes []string
			notes = append(notes, r.Notes...)
			if rp.Errors > 0 {
				notes = append(notes, "first error: "+rp.FirstError)
			}
			if rp.FirstGap != "" {
				notes = append(notes, "first gap: "+rp.FirstGap)
			}
			if r.ReadersErr != "" {
				notes = append(notes, "readers: "+r.ReadersErr)
			}
			if r.PlainErr != "" {
				notes = append(notes, "plain: "+r.PlainErr)
			}
			if r.WarningText != "" {
				notes = append(notes, "log: "+r.WarningText)
			}
			row(r.Broker, variant, rp.GapClients, rp.Dups, rp.Skipped, rp.Missing, rp.Errors,
				fmt.Sprintf("%d, max %d", r.BridgeBefore, r.BridgeMax), r.BridgeOpens,
				fmt.Sprintf("%d %s", r.ReadersBefore, r.Unit), r.ReadersMax, fmt.Sprintf("%d MB", r.HWM>>20),
				all, secs(rp.P50), secs(rp.P99), plain, r.Warnings, strings.Join(notes, "; "))
		}
		tw.Flush()
		for _, r := range hr.Runs {
			if r.Error == "" {
				fmt.Fprintf(out, "   %s %s: resume %s; %d events received; readers sampled %d times (%d above 8); RSS before the herd %d MB; slowest connect %v; log %s\n",
					r.Broker, map[bool]string{false: "same", true: "spread"}[r.Spread], r.Resume, r.Report.Events, r.ReadersSamples, r.ReadersOver,
					r.RSSBefore>>20, r.Report.Connect.Round(time.Millisecond), r.Log)
			}
		}
	}
	if hr.Extra != nil {
		printHerdExtra(out, hr.Extra)
	}
}

func secs(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// countingSource counts the readers the bridge has open on its source:
// the route's live reader and catch-up readers, whatever the broker.
type countingSource struct {
	bridge.Source
	mu    sync.Mutex
	open  int // readers open now
	max   int // most open at once since the last reset
	opens int // Open calls that succeeded, since the last reset
}

// readerCount is the reply to "readers".
type readerCount struct {
	Open  int `json:"open"`
	Max   int `json:"max"`
	Opens int `json:"opens"`
}

func (s *countingSource) Open(ctx context.Context, start bridge.Start) (bridge.Reader, error) {
	rd, err := s.Source.Open(ctx, start)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.open++
	s.opens++
	s.max = max(s.max, s.open)
	s.mu.Unlock()
	return &countingReader{Reader: rd, s: s}, nil
}

// Connected passes the source's Connectivity on (a source without it is
// always connected to the bridge).
func (s *countingSource) Connected() bool {
	if c, ok := s.Source.(bridge.Connectivity); ok {
		return c.Connected()
	}
	return true
}

// count returns the counts, and resets the maximum and the opens with
// reset.
func (s *countingSource) count(reset bool) readerCount {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := readerCount{Open: s.open, Max: s.max, Opens: s.opens}
	if reset {
		s.max, s.opens = s.open, 0
	}
	return c
}

type countingReader struct {
	bridge.Reader
	s    *countingSource
	once sync.Once
}

func (r *countingReader) Close() error {
	r.once.Do(func() {
		r.s.mu.Lock()
		r.s.open--
		r.s.mu.Unlock()
	})
	return r.Reader.Close()
}
