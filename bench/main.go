// Command bench compares three SSE servers fanning one stream out over
// loopback HTTP: esource (this repository), github.com/r3labs/sse/v2 and
// github.com/tmaxmax/go-sse, side by side in the same run; scenario W
// compares esource with a plain net/http fan-out written here.
//
// Usage, from this directory:
//
//	go run .                  # every scenario, default sizes (about 5 minutes)
//	go run . -quick           # a small version for smoke testing
//	go run . -scenarios=AC -libs=esource,r3labs -json
//	go run . -scenarios=KR    # the Kafka scenarios (a broker at -kafka-brokers)
//	go run . -scenarios=F     # filtered fan-out on Kafka, against unfiltered
//	go run . -scenarios=QS    # the RabbitMQ scenarios (a broker at -amqp-url)
//	go run . -scenarios=QS -quick
//	go run . -scenarios=W -wide-runs=6  # 15,000 clients of esource and of plain net/http
//	go run . -scenarios=CW -libs=esource,poller -wide-libs=esource,poller,plain  # and of the poller prototype
//	go run . -scenarios=T -soak-duration=5m  # the soak, shorter than its 30 minutes
//	go run . -scenarios=L -added-runs=3  # latency added over a direct consumer, JetStream and Kafka
//	go run . -scenarios=A -libs=esource,plain -tls=h2  # A over HTTP/2 and TLS, against plain
//	go run . -scenarios=W -tls=h1 -wide-runs=2         # W over HTTP/1.1 and TLS
//	go run . -scenarios=V     # a snapshot view served to 1,000 clients at once, against a kafka-go reader
//
// The scenarios, each run for every library:
//
//	A  throughput: -clients streams, -size-byte events, published as fast as
//	   a closed loop allows: event i only once every client has received
//	   event i-window. Deliveries/s = events × clients / elapsed.
//	B  latency: -rate events/s to -clients streams; each event carries its
//	   publish time; the clients report publish-to-receive percentiles.
//	C  memory per idle connection: -idle streams open, the server's memory
//	   after GC before and after they connect and stay idle for -idle-wait
//	   (6 s: longer than esource's 5 s probe interval, after which its
//	   idle streams wait on small fresh goroutines).
//	D  stalled client: scenario A with -stall-size-byte events, first for
//	   -stall-duration, then with one more client that never reads
//	   (SO_RCVBUF 4 KiB) until -stall-bytes per client are published; the
//	   other clients' deliveries/s in both runs, or "stalled" if they make
//	   no progress for -stall-timeout. The events are larger than in A, and
//	   the second run long, because the kernel buffers a few MB for the
//	   non-reading socket before the server's writes to it block.
//	W  a wide crowd, live: -wide-clients streams (15,000) receiving
//	   -wide-rate events/s (10), each event carrying its publish time,
//	   from esource and from "plain", the simplest shared-log fan-out on
//	   plain net/http (plain.go). Both crowds stay connected; the servers
//	   take turns of -wide-duration, -wide-runs rounds. Publish-to-receive
//	   percentiles per turn and over all, the server's memory per
//	   connection with the streams open, and esource's figures over
//	   plain's; -libs does not apply, -wide-libs adds the poller
//	   prototype (poller.go) as a third crowd (see wide.go).
//
// Scenarios A to C take lib "plain" too (-libs=esource,plain): the
// baseline of W, and of A over TLS. With -tls=h1 or -tls=h2, scenarios A,
// B, C and W run over TLS (tls.go): the server process serves HTTPS with a
// self-signed ECDSA P-256 certificate made at its start, offering h2 and
// http/1.1 as the esbridge program does, and esource takes HTTP/1.1
// connections over (a *tls.Conn then) as the program does; each client
// stream opens a TLS connection of its own and speaks HTTP/1.1 (h1) or
// HTTP/2 (h2) on it. The handshakes happen while the clients connect,
// before anything is timed. Other scenarios refuse -tls.
//
// The broker scenarios run the esbridge bridge on a real broker, on fresh
// streams created by the orchestrator and deleted at the end. They are not
// in the default run; -libs does not apply (see broker.go). On Kafka
// (-kafka-brokers, 127.0.0.1:9092 by default; scripts/kafka.sh start),
// -kafka-partitions topics:
//
//	K  Kafka to -clients SSE clients on one bridge route: -kafka-rate
//	   messages/s (-size bytes, keyed) produced for -kafka-duration, each
//	   carrying its produce time; produce-to-receive percentiles. Then a
//	   closed loop (-window) for -kafka-closed-duration: deliveries/s.
//	R  replay catch-up: -replay-messages keyed messages produced (timed),
//	   then read from the start, -replay-runs times each, alternating: by
//	   one kafka-go partition reader per partition (the limit), by the
//	   bridge's Kafka source alone, and by one SSE client of a bridge
//	   route with start=earliest (replayed from the broker). Messages/s,
//	   and the ratio of the bridge's to kafka-go's.
//	F  filtered fan-out (filtered.go): K's closed loop for -filter-duration
//	   with messages keyed k0..k{-filter-keys - 1}, -filter-runs pairs of
//	   runs: -clients unfiltered clients, then -clients clients asking for
//	   ?key=k{i%keys}, each receiving its key's messages only (checked:
//	   missing, mismatches). Deliveries/s (summed over the clients) and
//	   messages/s of both, and the filtered run's over the unfiltered's.
//
// On RabbitMQ (-amqp-url, amqp://guest:guest@127.0.0.1:5672/ by default;
// scripts/rabbitmq.sh start), stream queues read by offset (source/amqp,
// stream=NAME):
//
//	Q  a stream queue to -clients SSE clients on one bridge route:
//	   -amqp-rate messages/s published for -amqp-duration, each carrying
//	   its publish time; publish-to-receive percentiles. Then a closed
//	   loop (-window) for -amqp-closed-duration: deliveries/s.
//	S  replay catch-up: -amqp-replay-messages messages published (with
//	   confirmations, timed), then read from the start, -amqp-replay-runs
//	   times each, alternating: by one amqp091-go stream consumer with
//	   the source's prefetch and acknowledgements (the limit), by the
//	   bridge's source/amqp alone, and by one SSE client of a bridge route
//	   with start=earliest. Messages/s, and the ratio of the bridge's to
//	   amqp091-go's. RabbitMQ over AMQP 0-9-1 delivers a stream some 20
//	   times slower than Kafka here (about 50,000 messages/s on 2 busy
//	   cores), so the default is 500,000 messages: each read takes about
//	   10 s, long enough to be steady, and the scenario about 70 s.
//
// Scenario L (added.go) measures the latency esbridge adds over a direct
// consumer of the broker: -added-clients SSE clients (200) of a bridge
// route and, in the same client process, a consumer of the same stream
// with the settings of the bridge's source, at -added-rate messages/s
// (200) for -added-duration (20 s) after -added-warmup (5 s); on
// JetStream (a nats-server embedded in the orchestrator) and on Kafka
// (-kafka-brokers, a fresh topic of -added-kafka-partitions, 1),
// -added-runs times each: publish-to-receive p50, p90, p99 and max of
// both, and the SSE's minus the direct's.
//
// Scenario V (snapview.go) serves a snapshot view (issue 22): a fresh
// compacted topic of -snap-keys keys (100,000) of -snap-size bytes (200),
// -snap-rewrite of them written twice, one bridge route with snapshot=key
// in a fresh server process per run (-snap-runs, 3), its table built; then,
// alternating which goes first, one plain kafka-go reader reads the topic
// from its start, and -snap-clients SSE clients (1,000) ask for
// ?view=snapshot at once: each client's time from its request to its
// snapshot-end (p50, p99, max; every key counted), against the reader's
// time, and the server's heap and resident memory before the route, with
// the table built and after the crowd, against the table's bytes.
//
// Scenario H (herd.go) meets a crowd resuming at once. Scenario X
// (reset.go) attacks the esbridge program, built from ../cmd/esbridge and
// run with -demo over TLS, with HTTP/2 rapid resets (-reset-attackers
// connections, -reset-duration a phase): its resident memory and a normal
// client's latency, quiet, then under an attack on /healthz and on a
// stream route. Scenario T (soak.go) runs the esbridge program for
// -soak-duration (30 minutes) with a route on each broker, clients
// joining, leaving, reading slowly, resuming, filtering, merging, a NATS
// and an esbridge restart partway through: the slopes of its memory,
// goroutines, open files and broker connections, and an exact check of
// every client's stream (exit status 1 if one fails).
//
// The orchestrator (this process) re-executes itself twice per library and
// scenario: a server process (-role=server), whose memory is measured
// alone, and a client process (-role=client) holding every client
// connection; each has its own file descriptor limit. Both processes run on
// the same machine, so that their clocks agree.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"github.com/esbridge/esbridge/esource"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// options are the command-line flags of the orchestrator.
type options struct {
	scenarios     string
	libs          []string
	clients       int
	idle          int
	idleWait      time.Duration
	size          int
	stallSize     int
	stallBytes    int
	window        int
	rate          int
	backlog       int
	duration      time.Duration
	latDuration   time.Duration
	stallDuration time.Duration
	stallTimeout  time.Duration
	writeTimeout  time.Duration
	flush         time.Duration
	tls           string
	profileDir    string
	wide          wideOptions
	kafka         kafkaOptions
	amqp          amqpOptions
	herd          herdOptions
	reset         resetOptions
	soak          soakOptions
	filter        filterOptions
	added         addedOptions
	snap          snapOptions
	json          bool
	verbose       bool
}

func main() {
	var (
		o     options
		role  string
		lib   string
		libs  string
		quick bool
		route routeConfig
	)
	flag.StringVar(&role, "role", "", "internal: run as the `server` or `client` process")
	flag.StringVar(&lib, "lib", "", "internal: the library a server process serves")
	flag.StringVar(&o.scenarios, "scenarios", "ABCDW", "scenarios to run (letters A, B, C, D, W, the Kafka scenarios K, R and F, the RabbitMQ scenarios Q and S, the herd H, the rapid reset X, the soak T, the latency added over a direct consumer L, the snapshot views V)")
	flag.StringVar(&libs, "libs", strings.Join(libraries, ","), "libraries to compare, comma-separated")
	flag.IntVar(&o.clients, "clients", 1000, "clients in scenarios A, B and D")
	flag.IntVar(&o.idle, "idle", 10000, "idle connections in scenario C")
	flag.DurationVar(&o.idleWait, "idle-wait", 6*time.Second, "how long the connections of scenario C stay idle before the server's memory is measured")
	flag.IntVar(&o.size, "size", 100, "event data size in bytes")
	flag.IntVar(&o.stallSize, "stall-size", 4096, "event data size in scenario D, large enough that the non-reading client's socket buffers fill within the run")
	flag.IntVar(&o.stallBytes, "stall-bytes", 16<<20, "bytes per client published in scenario D with the non-reading client")
	flag.IntVar(&o.window, "window", 4096, "closed-loop window: events in flight beyond the slowest client")
	flag.IntVar(&o.rate, "rate", 1000, "events per second in scenario B")
	flag.IntVar(&o.backlog, "backlog", 65536, "esource backlog and r3labs stream buffer, in events")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "publishing time in scenario A")
	flag.DurationVar(&o.latDuration, "latency-duration", 10*time.Second, "publishing time in scenario B")
	flag.IntVar(&o.wide.clients, "wide-clients", 15000, "clients in scenario W")
	flag.IntVar(&o.wide.rate, "wide-rate", 10, "events per second in scenario W")
	flag.DurationVar(&o.wide.duration, "wide-duration", 10*time.Second, "publishing time of each server's turn in scenario W")
	flag.IntVar(&o.wide.runs, "wide-runs", 3, "rounds of scenario W: turns of each server")
	wideLibList := flag.String("wide-libs", "esource,plain", "servers of scenario W, comma-separated: some of esource, poller, plain")
	flag.DurationVar(&o.stallDuration, "stall-duration", 5*time.Second, "publishing time in scenario D without the non-reading client")
	flag.DurationVar(&o.stallTimeout, "stall-timeout", 10*time.Second, "report a stall after this long without progress")
	flag.DurationVar(&o.writeTimeout, "write-timeout", 5*time.Second, "esource write timeout")
	flag.DurationVar(&o.flush, "flush", esource.DefaultFlushInterval, "esource flush interval")
	flag.StringVar(&o.tls, "tls", tlsOff, "scenarios A, B, C and W over TLS: `off`, h1 (HTTP/1.1 over TLS) or h2 (HTTP/2 over TLS)")
	flag.StringVar(&o.profileDir, "profile", "", "write the server processes' CPU (A, B, D) and heap (C) profiles to this `dir`")
	kafkaFlags(&o.kafka)
	amqpFlags(&o.amqp)
	routeFlags(&route)
	herdFlags(&o.herd)
	resetFlags(&o.reset)
	soakFlags(&o.soak)
	filterFlags(&o.filter)
	addedFlags(&o.added)
	snapFlags(&o.snap)
	flag.BoolVar(&o.json, "json", false, "print the results as JSON instead of tables")
	flag.BoolVar(&o.verbose, "v", false, "show the child processes' stderr and progress")
	flag.BoolVar(&quick, "quick", false, "a small, fast run for smoke testing (overrides sizes and durations)")
	flag.Parse()

	var err error
	switch role {
	case "server":
		err = runServer(lib, serverConfig{backlog: o.backlog, writeTimeout: o.writeTimeout, flush: o.flush, route: route, tls: o.tls != tlsOff})
	case "client":
		err = runClient()
	case "herd-server":
		err = runHerdServer(o.herd.routeURL, o.backlog)
	case "snap-server":
		err = runSnapServer(o.snap.routeURL, o.backlog)
	case "herd-client":
		err = runHerdClient()
	case "":
		o.libs = strings.Split(libs, ",")
		o.wide.libs = strings.Split(*wideLibList, ",")
		if quick {
			o.clients, o.idle, o.wide.clients = 100, 1000, 1000
			o.duration, o.latDuration, o.stallDuration, o.wide.duration = 2*time.Second, 2*time.Second, 2*time.Second, 2*time.Second
			o.stallBytes = 4 << 20
			o.stallTimeout, o.writeTimeout = 3*time.Second, time.Second
			o.kafka.live.paced, o.kafka.live.closed, o.kafka.replay.messages = 2*time.Second, 2*time.Second, 100000
			o.amqp.live.paced, o.amqp.live.closed, o.amqp.replay.messages = 2*time.Second, 2*time.Second, 50000
			o.herd.clients, o.herd.back, o.herd.timeout = 200, 2000, time.Minute
			o.filter.duration, o.filter.runs = 2*time.Second, 1
			o.soak.duration, o.soak.clients = 3*time.Minute, 20
			o.added.warmup, o.added.duration = time.Second, 2*time.Second
			o.snap.keys, o.snap.rewrite, o.snap.clients, o.snap.runs = 20000, 2000, 100, 1
		}
		err = orchestrate(o)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// results holds everything measured, for the tables and -json.
type results struct {
	Go         string        `json:"go"`
	CPUs       int           `json:"cpus"`
	Options    jsonOptions   `json:"options"`
	Throughput []throughput  `json:"throughput,omitempty"`
	Latency    []latencyRun  `json:"latency,omitempty"`
	Memory     []memoryRun   `json:"memory,omitempty"`
	Stall      []stallRun    `json:"stall,omitempty"`
	Wide       []*wideLib    `json:"wide,omitempty"`
	Kafka      []brokerRun   `json:"kafka,omitempty"`
	Replay     *replayRes    `json:"replay,omitempty"`
	RabbitMQ   []brokerRun   `json:"rabbitmq,omitempty"`
	AMQPReplay *replayRes    `json:"rabbitmqReplay,omitempty"`
	Herd       *herdResults  `json:"herd,omitempty"`
	Reset      *resetResults `json:"reset,omitempty"`
	Filter     *filterRes    `json:"filter,omitempty"`
	Soak       *soakResults  `json:"soak,omitempty"`
	Added      []addedRun    `json:"added,omitempty"`
	Snap       *snapRes      `json:"snapshot,omitempty"`
}

type jsonOptions struct {
	Clients, Idle, Size, StallSize, StallBytes, Window, Rate, Backlog int
	Duration, LatencyDuration, StallDuration                          time.Duration
	StallTimeout, WriteTimeout                                        time.Duration
	WideClients, WideRate, WideRuns                                   int
	WideDuration                                                      time.Duration
}

// throughput is one library's result in scenario A (or D).
type throughput struct {
	Lib            string        `json:"lib"`
	Error          string        `json:"error,omitempty"`
	Run            runResult     `json:"run"`
	Client         clientReport  `json:"client"`
	DeliveriesPerS float64       `json:"deliveriesPerSecond"`
	VsEsource      float64       `json:"vsEsource,omitempty"`
	Connect        connectResult `json:"connect"`
	Machine        machineCPU    `json:"machine"`
}

// latencyRun is one library's result in scenario B.
type latencyRun struct {
	Lib     string       `json:"lib"`
	Error   string       `json:"error,omitempty"`
	Run     runResult    `json:"run"`
	Client  clientReport `json:"client"`
	Machine machineCPU   `json:"machine"`
}

// memoryRun is one library's result in scenario C.
type memoryRun struct {
	Lib         string        `json:"lib"`
	Error       string        `json:"error,omitempty"`
	Connect     connectResult `json:"connect"`
	Before      memResult     `json:"before"`
	After       memResult     `json:"after"`
	HeapStackKB float64       `json:"heapStackKBPerConn"`
	HeapKB      float64       `json:"heapKBPerConn"`
	StackKB     float64       `json:"stackKBPerConn"`
	SysKB       float64       `json:"sysKBPerConn"`
	RSSKB       float64       `json:"rssKBPerConn"`
	Goroutines  float64       `json:"goroutinesPerConn"`
}

// stallRun is one library's result in scenario D.
type stallRun struct {
	Lib     string     `json:"lib"`
	Without throughput `json:"without"`
	With    throughput `json:"with"`
	Ratio   float64    `json:"ratio"` // deliveries/s with the stalled client over without
}

func orchestrate(o options) error {
	for _, l := range o.libs {
		if !slices.Contains(libraries, l) && !slices.Contains(optionalLibs, l) {
			return fmt.Errorf("unknown library %q (want some of %v, %v)", l, libraries, optionalLibs)
		}
	}
	if err := checkTLS(o.tls, strings.ToUpper(o.scenarios)); err != nil {
		return err
	}
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return err
		}
	}
	res := results{
		Go:   runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		CPUs: runtime.NumCPU(),
		Options: jsonOptions{
			Clients: o.clients, Idle: o.idle, Size: o.size, StallSize: o.stallSize, StallBytes: o.stallBytes, Window: o.window, Rate: o.rate,
			Backlog: o.backlog, Duration: o.duration, LatencyDuration: o.latDuration,
			StallDuration: o.stallDuration, StallTimeout: o.stallTimeout, WriteTimeout: o.writeTimeout,
			WideClients: o.wide.clients, WideRate: o.wide.rate, WideRuns: o.wide.runs, WideDuration: o.wide.duration,
		},
	}
	sc := strings.ToUpper(o.scenarios)
	start := time.Now()
	if strings.Contains(sc, "A") {
		for _, lib := range o.libs {
			o.logf("A %s", lib)
			res.Throughput = append(res.Throughput, o.throughput(lib, "A", o.duration, o.size, 0, false))
		}
		ratios(res.Throughput)
	}
	if strings.Contains(sc, "B") {
		for _, lib := range o.libs {
			o.logf("B %s", lib)
			res.Latency = append(res.Latency, o.latency(lib))
		}
	}
	if strings.Contains(sc, "C") {
		for _, lib := range o.libs {
			o.logf("C %s", lib)
			res.Memory = append(res.Memory, o.memory(lib))
		}
	}
	if strings.Contains(sc, "D") {
		for _, lib := range o.libs {
			o.logf("D %s", lib)
			without := o.throughput(lib, "D0", o.stallDuration, o.stallSize, 0, false)
			with := o.throughput(lib, "D", 2*time.Minute, o.stallSize, uint64(o.stallBytes/o.stallSize), true)
			r := stallRun{Lib: lib, Without: without, With: with}
			if without.DeliveriesPerS > 0 && !with.Run.Stalled {
				r.Ratio = with.DeliveriesPerS / without.DeliveriesPerS
			}
			res.Stall = append(res.Stall, r)
		}
	}
	if strings.Contains(sc, "W") {
		res.Wide = o.wideScenario()
	}
	if strings.Contains(sc, "K") {
		o.logf("K")
		res.Kafka = o.liveScenario(kafkaBroker{o.kafka}, "K", o.kafka.live)
	}
	if strings.Contains(sc, "F") {
		o.logf("F")
		res.Filter = o.filterScenario()
	}
	if strings.Contains(sc, "R") {
		o.logf("R")
		res.Replay = o.replayScenario(kafkaBroker{o.kafka}, "R", o.kafka.replay)
	}
	if strings.Contains(sc, "Q") {
		o.logf("Q")
		res.RabbitMQ = o.liveScenario(amqpBroker{o.amqp}, "Q", o.amqp.live)
	}
	if strings.Contains(sc, "S") {
		o.logf("S")
		res.AMQPReplay = o.replayScenario(amqpBroker{o.amqp}, "S", o.amqp.replay)
	}
	if strings.Contains(sc, "L") {
		o.logf("L")
		res.Added = o.addedScenario()
	}
	if strings.Contains(sc, "V") {
		o.logf("V")
		res.Snap = o.snapScenario()
	}
	if strings.Contains(sc, "H") {
		o.logf("H")
		res.Herd = o.herdScenario()
	}
	if strings.Contains(sc, "X") {
		o.logf("X")
		res.Reset = o.resetScenario()
	}
	if strings.Contains(sc, "T") {
		o.logf("T")
		res.Soak = o.soakScenario()
	}
	o.logf("done in %v", time.Since(start).Round(time.Second))
	if o.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		printTables(os.Stdout, o, res)
	}
	if res.Soak != nil && res.Soak.failed() {
		if res.Soak.Error != "" {
			return fmt.Errorf("soak: %s", res.Soak.Error)
		}
		return fmt.Errorf("soak: %d checks failed", res.Soak.NFailures)
	}
	return nil
}

func (o options) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// A session is a server process and a client process for one library.
type session struct {
	srv, cli *child
	addr     hello
	tls      string // -tls: how the client connects
}

func (o options) open(lib string, extra ...string) (*session, error) {
	args := append([]string{"-role=server", "-lib=" + lib, "-tls=" + o.tls,
		fmt.Sprint("-backlog=", o.backlog), fmt.Sprint("-write-timeout=", o.writeTimeout), fmt.Sprint("-flush=", o.flush)}, extra...)
	srv, err := startChild("server "+lib, o.verbose, args...)
	if err != nil {
		return nil, err
	}
	s := &session{srv: srv, tls: o.tls}
	if err := srv.call(command{}, &s.addr, 30*time.Second); err != nil {
		srv.kill()
		return nil, err
	}
	if s.cli, err = startChild("client "+lib, o.verbose, "-role=client"); err != nil {
		srv.kill()
		return nil, err
	}
	return s, nil
}

func (s *session) close() {
	s.cli.kill()
	s.srv.kill()
}

// connect opens n client streams (and the stalled one) while the server
// publishes warm-up events, and returns once each has received one.
func (s *session) connect(n int, c command) (connectResult, error) {
	var cr connectResult
	var none struct{}
	if err := s.srv.call(command{Cmd: "warm", On: true}, &none, 10*time.Second); err != nil {
		return cr, err
	}
	c.Cmd, c.N, c.URL, c.TLS = "connect", n, s.addr.HTTP, s.tls
	if err := s.cli.call(c, &cr, 3*time.Minute); err != nil {
		return cr, err
	}
	if err := s.srv.call(command{Cmd: "warm", On: false}, &none, 10*time.Second); err != nil {
		return cr, err
	}
	if cr.Ready < n {
		return cr, fmt.Errorf("only %d of %d clients connected and received an event in %v (%d failed)",
			cr.Ready, n, cr.Elapsed.Round(time.Second), cr.Errors)
	}
	if c.Stall {
		// Let the non-reading client, which cannot tell, be subscribed.
		time.Sleep(200 * time.Millisecond)
	}
	return cr, nil
}

func (o options) profile(scenario, lib, kind string) string {
	if o.profileDir == "" {
		return ""
	}
	return filepath.Join(o.profileDir, scenario+"-"+lib+"."+kind+".pprof")
}

// throughput runs the closed-loop publisher (scenarios A and D) with
// size-byte events for d or n events (if not 0), whichever comes first; the
// window is scaled to keep as many bytes in flight as in scenario A.
func (o options) throughput(lib, scenario string, d time.Duration, size int, n uint64, stall bool) (t throughput) {
	t.Lib = lib
	s, err := o.open(lib)
	if err != nil {
		t.Error = err.Error()
		return t
	}
	defer s.close()
	t.Connect, err = s.connect(o.clients, command{Stall: stall, BufSize: 64 << 10, Progress: s.addr.Progress})
	if err != nil {
		t.Error = err.Error()
		return t
	}
	window := max(16, o.window*o.size/size)
	cmd := command{Cmd: "closed", Window: window, Duration: d, MaxEvents: n, Size: size,
		StallTimeout: o.stallTimeout, CPUProfile: o.profile(scenario, lib, "cpu")}
	machine := cpuMeter()
	if err := s.srv.call(cmd, &t.Run, d+o.stallTimeout+time.Minute); err != nil {
		t.Error = err.Error()
		return t
	}
	t.Machine = machine()
	if err := s.cli.call(command{Cmd: "report"}, &t.Client, time.Minute); err != nil {
		t.Error = err.Error()
		return t
	}
	if t.Run.Elapsed > 0 {
		t.DeliveriesPerS = float64(t.Run.Delivered) * float64(o.clients) / t.Run.Elapsed.Seconds()
	}
	return t
}

// ratios sets each result's throughput relative to esource's.
func ratios(ts []throughput) {
	var base float64
	for _, t := range ts {
		if t.Lib == "esource" {
			base = t.DeliveriesPerS
		}
	}
	for i := range ts {
		if base > 0 && ts[i].DeliveriesPerS > 0 {
			ts[i].VsEsource = ts[i].DeliveriesPerS / base
		}
	}
}

// latency runs scenario B.
func (o options) latency(lib string) (l latencyRun) {
	l.Lib = lib
	s, err := o.open(lib)
	if err != nil {
		l.Error = err.Error()
		return l
	}
	defer s.close()
	if _, err := s.connect(o.clients, command{Latency: true, BufSize: 64 << 10, Progress: s.addr.Progress}); err != nil {
		l.Error = err.Error()
		return l
	}
	cmd := command{Cmd: "paced", Rate: o.rate, Duration: o.latDuration, Size: o.size,
		StallTimeout: o.stallTimeout, CPUProfile: o.profile("B", lib, "cpu")}
	machine := cpuMeter()
	if err := s.srv.call(cmd, &l.Run, o.latDuration+o.stallTimeout+time.Minute); err != nil {
		l.Error = err.Error()
		return l
	}
	l.Machine = machine()
	if err := s.cli.call(command{Cmd: "report"}, &l.Client, time.Minute); err != nil {
		l.Error = err.Error()
	}
	return l
}

// memory runs scenario C.
func (o options) memory(lib string) (m memoryRun) {
	m.Lib = lib
	s, err := o.open(lib)
	if err != nil {
		m.Error = err.Error()
		return m
	}
	defer s.close()
	if err := s.srv.call(command{Cmd: "mem"}, &m.Before, time.Minute); err != nil {
		m.Error = err.Error()
		return m
	}
	if m.Connect, err = s.connect(o.idle, command{BufSize: 4 << 10}); err != nil {
		m.Error = err.Error()
		return m
	}
	time.Sleep(o.idleWait) // idle: the last warm-up writes settle, and esource's streams move to small stacks
	if err := s.srv.call(command{Cmd: "mem", HeapProfile: o.profile("C", lib, "heap")}, &m.After, time.Minute); err != nil {
		m.Error = err.Error()
		return m
	}
	n := float64(o.idle)
	kb := func(after, before uint64) float64 { return (float64(after) - float64(before)) / 1024 / n }
	m.HeapStackKB = kb(m.After.HeapInuse+m.After.StackInuse, m.Before.HeapInuse+m.Before.StackInuse)
	m.HeapKB = kb(m.After.HeapInuse, m.Before.HeapInuse)
	m.StackKB = kb(m.After.StackInuse, m.Before.StackInuse)
	m.SysKB = kb(m.After.Sys, m.Before.Sys)
	m.RSSKB = kb(m.After.RSS, m.Before.RSS)
	m.Goroutines = float64(m.After.Goroutines-m.Before.Goroutines) / n
	return m
}

// printTables writes the results as plain-text tables.
func printTables(out io.Writer, o options, r results) {
	fmt.Fprintf(out, "SSE fan-out over 127.0.0.1, %s, %d CPUs; server and clients in separate processes\n", r.Go, r.CPUs)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(cells ...any) {
		for _, c := range cells {
			fmt.Fprint(tw, c, "\t")
		}
		fmt.Fprintln(tw)
	}
	section := func(title string) {
		tw.Flush()
		fmt.Fprintf(out, "\n%s\n", title)
	}
	if len(r.Throughput) > 0 {
		section(fmt.Sprintf("A. Throughput: %d clients, %d-byte events, closed loop with window %d, %v, %s",
			o.clients, o.size, o.window, o.duration, transport(o.tls)))
		row("library", "events", "elapsed", "deliveries/s", "vs esource", "missing", "gaps", "disorder", "server CPU", "client CPU", "idle CPU", "note")
		var es, pl *throughput
		for i, t := range r.Throughput {
			row(throughputCells(t)...)
			switch t.Lib {
			case "esource":
				es = &r.Throughput[i]
			case "plain":
				pl = &r.Throughput[i]
			}
		}
		if es != nil && pl != nil && es.DeliveriesPerS > 0 && pl.DeliveriesPerS > 0 {
			// Per CPU second of the server, the ratio holds when the
			// machine's other work takes more from one server than from
			// the other.
			perCPU := func(t *throughput) float64 {
				return float64(t.Run.Delivered) * float64(o.clients) / t.Run.CPU.Seconds()
			}
			tw.Flush()
			fmt.Fprintf(out, "esource/plain: %.2fx deliveries/s", es.DeliveriesPerS/pl.DeliveriesPerS)
			if es.Run.CPU > 0 && pl.Run.CPU > 0 {
				fmt.Fprintf(out, ", %.2fx deliveries per server CPU second", perCPU(es)/perCPU(pl))
			}
			fmt.Fprintln(out)
		}
	}
	if len(r.Latency) > 0 {
		section(fmt.Sprintf("B. Latency: %d events/s (%d bytes) to %d clients for %v, publish to receive",
			o.rate, o.size, o.clients, o.latDuration))
		row("library", "events", "published/s", "p50", "p90", "p99", "max", "missing", "gaps", "disorder", "server CPU", "idle CPU", "note")
		for _, l := range r.Latency {
			if l.Error != "" {
				row(l.Lib, "", "", "", "", "", "", "", "", "", "", "", "error: "+l.Error)
				continue
			}
			rate := 0.0
			if l.Run.PublishTime > 0 {
				rate = float64(l.Run.Published) / l.Run.PublishTime.Seconds()
			}
			row(l.Lib, l.Run.Published, fmt.Sprintf("%.0f", rate),
				ms(l.Client.Latency.P50), ms(l.Client.Latency.P90), ms(l.Client.Latency.P99), ms(l.Client.Latency.Max),
				missing(l.Run, l.Client), l.Client.Gaps, l.Client.Disorder,
				pct(l.Run.CPU, l.Run.Elapsed), idle(l.Machine), note(l.Run, l.Client, l.Machine))
		}
	}
	if len(r.Memory) > 0 {
		section(fmt.Sprintf("C. Memory per idle connection: %d connections, server process, after GC", o.idle))
		row("library", "heap+stack KB/conn", "heap", "stack", "Sys KB/conn", "RSS KB/conn", "goroutines/conn", "RSS before MB", "RSS after MB", "note")
		for _, m := range r.Memory {
			if m.Error != "" {
				row(m.Lib, "", "", "", "", "", "", "", "", "error: "+m.Error)
				continue
			}
			row(m.Lib, fmt.Sprintf("%.2f", m.HeapStackKB), fmt.Sprintf("%.2f", m.HeapKB), fmt.Sprintf("%.2f", m.StackKB),
				fmt.Sprintf("%.1f", m.SysKB), fmt.Sprintf("%.2f", m.RSSKB),
				fmt.Sprintf("%.2f", m.Goroutines), m.Before.RSS>>20, m.After.RSS>>20, "")
		}
	}
	if len(r.Stall) > 0 {
		section(fmt.Sprintf("D. Stalled client: %d clients, %d-byte events, closed loop (window %d): %v without, then %d MiB per client with 1 more client that never reads (SO_RCVBUF 4 KiB); esource write timeout %v",
			o.clients, o.stallSize, max(16, o.window*o.size/o.stallSize), o.stallDuration, o.stallBytes>>20, o.writeTimeout))
		row("library", "deliveries/s without", "deliveries/s with", "with/without", "events", "missing", "gaps", "non-reading client")
		for _, s := range r.Stall {
			if s.With.Error != "" || s.Without.Error != "" {
				row(s.Lib, "", "", "", "", "", "", "error: "+s.With.Error+s.Without.Error)
				continue
			}
			ratio := fmt.Sprintf("%.2f", s.Ratio)
			if s.With.Run.Stalled {
				ratio = "STALLED"
			}
			with := fmt.Sprintf("%.0f", s.With.DeliveriesPerS)
			if s.With.Run.Stalled {
				with = fmt.Sprintf("0 after %d events", s.With.Run.Delivered)
			}
			row(s.Lib, fmt.Sprintf("%.0f", s.Without.DeliveriesPerS), with, ratio,
				s.With.Run.Published, missing(s.With.Run, s.With.Client), s.With.Client.Gaps, s.With.Client.Stalled)
		}
	}
	tw.Flush()
	if len(r.Wide) > 0 {
		printWide(out, o, r.Wide)
	}
	if len(r.Kafka) > 0 {
		printLive(out, fmt.Sprintf("K. Kafka to %d SSE clients, one bridge route on a %d-partition topic, %d-byte messages: %d/s for %v (paced), then closed loop (window %d) for %v; latency is produce to SSE receive",
			o.clients, o.kafka.partitions, o.size, o.kafka.live.rate, o.kafka.live.paced, o.window, o.kafka.live.closed), r.Kafka)
	}
	if r.Filter != nil {
		printFilter(out, o, r.Filter)
	}
	if len(r.Added) > 0 {
		printAdded(out, o, r.Added)
	}
	if r.Snap != nil {
		printSnap(out, o, r.Snap)
	}
	if r.Replay != nil {
		printReplay(out, fmt.Sprintf("R. Replay catch-up: %d keyed %d-byte messages on %d partitions, read from the start",
			r.Replay.Messages, o.size, o.kafka.partitions), "kafka.Writer, 4 goroutines × 10,000-message batches", "kafka-go readers", r.Replay)
	}
	if len(r.RabbitMQ) > 0 {
		printLive(out, fmt.Sprintf("Q. RabbitMQ to %d SSE clients, one bridge route on a stream queue, %d-byte messages: %d/s for %v (paced), then closed loop (window %d) for %v; latency is publish to SSE receive",
			o.clients, o.size, o.amqp.live.rate, o.amqp.live.paced, o.window, o.amqp.live.closed), r.RabbitMQ)
	}
	if r.AMQPReplay != nil {
		printReplay(out, fmt.Sprintf("S. Replay catch-up: %d %d-byte messages in a stream queue, read from the start",
			r.AMQPReplay.Messages, o.size), "amqp091-go, 4 channels × 1,000-message batches, confirmed", "amqp091-go consumer", r.AMQPReplay)
	}
	if r.Reset != nil {
		printReset(out, o, r.Reset)
	}
	if r.Herd != nil {
		printHerd(out, o, r.Herd)
	}
	if r.Soak != nil {
		printSoak(out, o, r.Soak)
	}
}

func throughputCells(t throughput) []any {
	if t.Error != "" {
		return []any{t.Lib, "", "", "", "", "", "", "", "", "", "", "error: " + t.Error}
	}
	vs := "1.00x"
	if t.Lib != "esource" {
		vs = fmt.Sprintf("1/%.1f", 1/t.VsEsource)
	}
	if t.VsEsource == 0 {
		vs = "-"
	}
	return []any{t.Lib, t.Run.Published, t.Run.Elapsed.Round(time.Millisecond), fmt.Sprintf("%.0f", t.DeliveriesPerS), vs,
		missing(t.Run, t.Client), t.Client.Gaps, t.Client.Disorder,
		pct(t.Run.CPU, t.Run.Elapsed), pct(t.Client.CPU, t.Run.Elapsed), idle(t.Machine), note(t.Run, t.Client, t.Machine)}
}

// missing is the largest number of published events a client lacks.
func missing(r runResult, c clientReport) uint64 {
	if c.MinEvents >= r.Published {
		return 0
	}
	return r.Published - c.MinEvents
}

func note(r runResult, c clientReport, m machineCPU) string {
	var n []string
	if m.Steal >= 5 {
		n = append(n, fmt.Sprintf("%.0f%% of the CPU stolen by the hypervisor", m.Steal))
	}
	if r.Stalled {
		n = append(n, fmt.Sprintf("STALLED: no progress for the stall timeout after %d of %d events", r.Delivered, r.Published))
	}
	if c.Errors > 0 {
		n = append(n, fmt.Sprintf("%d client errors: %s", c.Errors, c.FirstError))
	}
	return strings.Join(n, "; ")
}

func idle(m machineCPU) string { return fmt.Sprintf("%.0f%%", m.Idle) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/1e6) }

func pct(cpu, wall time.Duration) string {
	if wall <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*cpu.Seconds()/wall.Seconds())
}

// cpuMeter starts measuring this machine's CPU time; the function it
// returns gives the percentages of it that were idle and that the
// hypervisor stole since, which tell whether a result was bound by CPU.
func cpuMeter() func() machineCPU {
	read := func() (idle, steal, total uint64) {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return 0, 0, 0
		}
		line, _, _ := strings.Cut(string(b), "\n")
		for i, f := range strings.Fields(line)[1:] {
			v, _ := strconv.ParseUint(f, 10, 64)
			if i < 8 { // user nice system idle iowait irq softirq steal
				total += v
			}
			switch i {
			case 3, 4:
				idle += v
			case 7:
				steal = v
			}
		}
		return idle, steal, total
	}
	i0, s0, t0 := read()
	return func() machineCPU {
		i1, s1, t1 := read()
		if t1 <= t0 {
			return machineCPU{}
		}
		d := float64(t1 - t0)
		return machineCPU{Idle: 100 * float64(i1-i0) / d, Steal: 100 * float64(s1-s0) / d}
	}
}

// machineCPU is how much of the machine's CPU time was idle or stolen
// during a run, in percent.
type machineCPU struct {
	Idle  float64 `json:"idlePercent"`
	Steal float64 `json:"stealPercent"`
}
