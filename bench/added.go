// Scenario L, "latency added": what esbridge adds to the latency of a
// broker, against a direct consumer of the same stream, in the same run.
// On JetStream (a nats-server embedded in the orchestrator) and on Kafka
// (-kafka-brokers, a fresh topic of -added-kafka-partitions), each in
// turn, -added-runs times:
//
//   - The server process (lib "jetstream" or "kafka") runs a bridge route
//     on the stream, as scenario K does (broker.go), and produces
//     -added-rate messages/s ("TS ID x…", -size bytes, TS the publish
//     time in Unix nanoseconds) through the broker's Go client.
//   - The client process holds -clients SSE clients of the route (200 by
//     default here) and, beside them, a direct consumer of the stream
//     with the settings of the bridge's source: on JetStream an
//     ephemeral, unacknowledged, in-memory consumer by start sequence,
//     read with Messages and a 500 ms pull heartbeat (source/nats
//     jetstream.go); on Kafka a kafka-go Conn per partition, seeked to the
//     end, fetching with MinBytes 1, MaxBytes 8 MiB and MaxWait 500 ms
//     (source/kafka partition.go). Both time every message from its
//     publish time to its receipt.
//   - -added-warmup of paced publishing, whose latencies are dropped, then
//     -added-duration measured: p50, p90, p99 and max of the SSE clients
//     (over every delivery) and of the direct consumer (over every
//     message), and the SSE's minus the direct's, per percentile: the
//     latency esbridge adds. Besides, each message's first receipt by any
//     SSE client ("first SSE client"): the path through the bridge without
//     the time the fan-out takes to reach every client on a machine of a
//     few cores.
//
// Both readers are in one process on the same machine as the broker and
// the producer, so the clocks agree and both share the load alike.

package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"

	natssource "github.com/esbridge/esbridge/source/nats"
)

// addedOptions are the flags of scenario L.
type addedOptions struct {
	brokers    string        // "jetstream,kafka" or one of them
	clients    int           // SSE clients
	rate       int           // messages/s
	warmup     time.Duration // paced, not measured
	duration   time.Duration // paced, measured
	partitions int           // of the Kafka topic
	runs       int           // of each broker, alternating
}

func addedFlags(a *addedOptions) {
	flag.StringVar(&a.brokers, "added-brokers", "jetstream,kafka", "scenario L: the brokers, comma-separated (jetstream, kafka)")
	flag.IntVar(&a.clients, "added-clients", 200, "scenario L: SSE clients")
	flag.IntVar(&a.rate, "added-rate", 200, "scenario L: messages per second")
	flag.DurationVar(&a.warmup, "added-warmup", 5*time.Second, "scenario L: paced publishing before the measurement, not measured")
	flag.DurationVar(&a.duration, "added-duration", 20*time.Second, "scenario L: paced publishing measured")
	flag.IntVar(&a.partitions, "added-kafka-partitions", 1, "scenario L: partitions of the Kafka topic")
	flag.IntVar(&a.runs, "added-runs", 1, "scenario L: runs of each broker, alternating")
}

// directSpec tells the client process which stream to read directly.
type directSpec struct {
	Kind       string `json:"kind"` // "jetstream" or "kafka"
	Addr       string `json:"addr"` // host:port of the NATS server; Kafka brokers, comma-separated
	Name       string `json:"name"` // the stream or topic
	Partitions int    `json:"partitions,omitempty"`
}

// directReport is what the direct consumer received, in a client report.
type directReport struct {
	Events     uint64  `json:"events"` // numbered messages, since the start
	Duplicates uint64  `json:"duplicates"`
	Latency    latency `json:"latency"`
	Error      string  `json:"error,omitempty"`
}

// addedRun is one run of scenario L on one broker.
type addedRun struct {
	Broker    string        `json:"broker"`
	Run       int           `json:"run"`
	Error     string        `json:"error,omitempty"`
	Published uint64        `json:"published"` // warm-up and measured
	Paced     runResult     `json:"paced"`     // the measured part
	Client    clientReport  `json:"client"`    // of the measured part
	SSE       latency       `json:"sse"`
	Direct    latency       `json:"direct"`
	Added     latency       `json:"added"`      // SSE minus direct, per percentile
	First     latency       `json:"first"`      // of each message's first SSE receipt
	FirstAdd  latency       `json:"firstAdded"` // first minus direct, per percentile
	Missing   uint64        `json:"missing"`
	DirectMis uint64        `json:"directMissing"`
	ServerCPU time.Duration `json:"serverCPU"` // the bridge process's, measured part (with the producer)
	Machine   machineCPU    `json:"machine"`
}

// A latencyTarget is the broker scenario L runs on, in the orchestrator.
type latencyTarget struct {
	name       string // for tables
	lib        string // the server process's
	addr       string // for the server's route and the direct consumer
	partitions int
	create     func() (string, error)
	remove     func(string)
	close      func()
}

// addedScenario runs scenario L.
func (o options) addedScenario() []addedRun {
	var targets []latencyTarget
	defer func() {
		for _, t := range targets {
			t.close()
		}
	}()
	for _, b := range strings.Split(o.added.brokers, ",") {
		switch strings.TrimSpace(b) {
		case "jetstream":
			js, err := newJSBroker()
			if err != nil {
				return []addedRun{{Broker: "JetStream", Error: err.Error()}}
			}
			u, _ := url.Parse(js.srv.ClientURL())
			targets = append(targets, latencyTarget{name: "JetStream", lib: "jetstream", addr: u.Host, partitions: 1,
				create: js.create, remove: js.remove, close: js.close})
		case "kafka":
			ko := o.kafka
			ko.partitions = o.added.partitions
			k := kafkaBroker{ko}
			targets = append(targets, latencyTarget{name: fmt.Sprintf("Kafka, %d partition(s)", ko.partitions), lib: "kafka", addr: k.brokers,
				partitions: ko.partitions, create: func() (string, error) { return k.create("l") }, remove: k.remove, close: func() {}})
		default:
			return []addedRun{{Error: fmt.Sprintf("scenario L: unknown broker %q (want jetstream or kafka)", b)}}
		}
	}
	var runs []addedRun
	for run := 1; run <= o.added.runs; run++ {
		for _, t := range targets {
			o.logf("L: %s, run %d", t.name, run)
			runs = append(runs, o.addedRun(t, run))
		}
	}
	return runs
}

// addedRun runs scenario L once on a fresh stream of t.
func (o options) addedRun(t latencyTarget, run int) (r addedRun) {
	r.Broker, r.Run = t.name, run
	name, err := t.create()
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer t.remove(name)
	s, err := o.open(t.lib, "-route-addr="+t.addr, "-route-name="+name)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer s.close()
	// The direct consumer first: it is at the end of the stream when the
	// reply comes, and receives the warm-up messages too.
	var none struct{}
	if err := s.cli.call(command{Cmd: "direct", Direct: &directSpec{Kind: t.lib, Addr: t.addr, Name: name, Partitions: t.partitions}},
		&none, time.Minute); err != nil {
		r.Error = err.Error()
		return r
	}
	if _, err := s.connect(o.added.clients, command{Latency: true, Broker: true, First: true, BufSize: 64 << 10, Progress: s.addr.Progress}); err != nil {
		r.Error = err.Error()
		return r
	}
	paced := func(d time.Duration, profile string) (runResult, clientReport, error) {
		var res runResult
		var rep clientReport
		cmd := command{Cmd: "paced", Rate: o.added.rate, Duration: d, Size: o.size, StallTimeout: o.stallTimeout, CPUProfile: profile}
		if err := s.srv.call(cmd, &res, d+o.stallTimeout+time.Minute); err != nil {
			return res, rep, err
		}
		err := s.cli.call(command{Cmd: "report", Reset: true}, &rep, time.Minute)
		return res, rep, err
	}
	warm, _, err := paced(o.added.warmup, "")
	if err != nil {
		r.Error = err.Error()
		return r
	}
	machine := cpuMeter()
	r.Paced, r.Client, err = paced(o.added.duration, o.profile("L", fmt.Sprintf("%s-%d", t.lib, run), "cpu"))
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.Machine = machine()
	r.ServerCPU = r.Paced.CPU
	r.Published = warm.Published + r.Paced.Published
	r.SSE = r.Client.Latency
	if r.Client.MinEvents < r.Published {
		r.Missing = r.Published - r.Client.MinEvents
	}
	if d := r.Client.Direct; d != nil {
		r.Direct = d.Latency
		if d.Events < r.Published {
			r.DirectMis = r.Published - d.Events
		}
		if d.Error != "" {
			r.Error = "direct consumer: " + d.Error
		}
	} else {
		r.Error = "no direct consumer in the client's report"
	}
	r.Added = minus(r.SSE, r.Direct)
	if r.Client.First != nil {
		r.First = *r.Client.First
		r.FirstAdd = minus(r.First, r.Direct)
	}
	return r
}

// minus returns a's percentiles minus b's, with a's count.
func minus(a, b latency) latency {
	return latency{N: a.N, P50: a.P50 - b.P50, P90: a.P90 - b.P90, P99: a.P99 - b.P99, Max: a.Max - b.Max}
}

// printAdded writes the table of scenario L.
func printAdded(out io.Writer, o options, runs []addedRun) {
	fmt.Fprintf(out, "\nL. Latency added by esbridge: %d SSE clients of one bridge route and a direct consumer of the same stream, in one client process; %d %d-byte messages/s, %v measured after %v; publish to receive\n",
		o.added.clients, o.added.rate, o.size, o.added.duration, o.added.warmup)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(cells ...any) {
		for _, c := range cells {
			fmt.Fprint(tw, c, "\t")
		}
		fmt.Fprintln(tw)
	}
	row("broker", "run", "reader", "messages", "p50", "p90", "p99", "max", "missing", "dups", "bridge CPU", "idle CPU", "note")
	for _, r := range runs {
		if r.Error != "" && r.SSE.N == 0 {
			row(r.Broker, r.Run, "", "", "", "", "", "", "", "", "", "", "error: "+r.Error)
			continue
		}
		var directDups uint64
		if r.Client.Direct != nil {
			directDups = r.Client.Direct.Duplicates
		}
		row(r.Broker, r.Run, "direct", r.Direct.N, ms(r.Direct.P50), ms(r.Direct.P90), ms(r.Direct.P99), ms(r.Direct.Max), r.DirectMis, directDups, "", "", r.Error)
		row("", "", "esbridge SSE", r.SSE.N, ms(r.SSE.P50), ms(r.SSE.P90), ms(r.SSE.P99), ms(r.SSE.Max), r.Missing, r.Client.Duplicates,
			pct(r.ServerCPU, r.Paced.Elapsed), idle(r.Machine), note(r.Paced, r.Client, r.Machine))
		row("", "", "added", "", signedMS(r.Added.P50), signedMS(r.Added.P90), signedMS(r.Added.P99), signedMS(r.Added.Max), "", "", "", "", "")
		row("", "", "first SSE client", r.First.N, ms(r.First.P50), ms(r.First.P90), ms(r.First.P99), ms(r.First.Max), "", "", "", "", "")
		row("", "", "added to the first", "", signedMS(r.FirstAdd.P50), signedMS(r.FirstAdd.P90), signedMS(r.FirstAdd.P99), signedMS(r.FirstAdd.Max), "", "", "", "", "")
	}
	tw.Flush()
	fmt.Fprintln(out, "targets: added p50 <= +1 ms, p99 <= +3 ms; \"first SSE client\" is each message's first receipt by any SSE client: the bridge without the fan-out's spread")
}

func signedMS(d time.Duration) string { return fmt.Sprintf("%+.2fms", float64(d)/1e6) }

// Server process: lib "jetstream".

// newJetStreamServer is the server process of lib "jetstream": a bridge
// route on the stream cfg.route.Name of the NATS server cfg.route.Addr,
// publishing on the stream's subject (see jsBroker.create) over core NATS.
func newJetStreamServer(cfg serverConfig) (server, error) {
	src, err := natssource.New(natssource.Config{Servers: []string{cfg.route.Addr}, Stream: cfg.route.Name})
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect("nats://" + cfg.route.Addr)
	if err != nil {
		src.Close()
		return nil, err
	}
	return newBridgeServer(cfg, src, &natsProducer{nc: nc, subject: strings.ToLower(cfg.route.Name) + ".m"})
}

// natsProducer publishes over core NATS, without waiting for the
// stream's acknowledgement.
type natsProducer struct {
	nc      *nats.Conn
	subject string
	once    sync.Once
}

func (p *natsProducer) send(_ string, value []byte) {
	if err := p.nc.Publish(p.subject, value); err != nil {
		p.once.Do(func() { fmt.Fprintln(os.Stderr, "bench: jetstream server: publish:", err) })
	}
}

func (p *natsProducer) close() { p.nc.Close() }

// Client process: the direct consumer.

// startDirect starts the direct consumer of spec in the client process,
// and returns once it reads from the end of the stream. Its messages are
// counted and timed by a stream in broker mode, outside p.streams.
func (p *clientProc) startDirect(spec directSpec) error {
	if p.direct != nil {
		return errors.New("a direct consumer is running already")
	}
	s := &stream{broker: true, hist: new(histogram)}
	var err error
	switch spec.Kind {
	case "jetstream":
		err = directJetStream(spec, s)
	case "kafka":
		err = directKafka(spec, s)
	default:
		err = fmt.Errorf("unknown direct consumer %q", spec.Kind)
	}
	if err != nil {
		return err
	}
	p.direct = s
	return nil
}

// receive counts and times the message data, received at now (Unix
// nanoseconds).
func (s *stream) receive(data []byte, now int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.scanBroker(data, now) {
	case brokerWarm:
		s.warm.Store(true)
	case brokerNew:
		s.events.Add(1)
	}
}

// fail records the first error of the stream.
func (s *stream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

// directReport summarizes the direct consumer; with reset, its latencies
// start anew.
func (p *clientProc) directReport(reset bool) *directReport {
	s := p.direct
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &directReport{Events: s.events.Load(), Duplicates: s.dups, Latency: s.hist.summary()}
	if s.err != nil {
		r.Error = s.err.Error()
	}
	if reset {
		*s.hist = histogram{}
	}
	return r
}

// directJetStream reads the stream from its end as the bridge's JetStream
// source does: an ephemeral consumer of its own, unacknowledged, in memory,
// one replica, by start sequence, read with Messages and a pull heartbeat
// of 500 ms. The process's end ends it.
func directJetStream(spec directSpec, s *stream) error {
	nc, err := nats.Connect("nats://" + spec.Addr)
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, spec.Name)
	if err != nil {
		return err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, spec.Name, jetstream.ConsumerConfig{
		Name:              "direct-" + rand.Text(),
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       st.CachedInfo().State.LastSeq + 1,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: 10 * time.Second,
		Replicas:          1,
		MemoryStorage:     true,
	})
	if err != nil {
		return err
	}
	it, err := cons.Messages(jetstream.PullHeartbeat(500*time.Millisecond), jetstream.WithMessagesErrOnMissingHeartbeat(true))
	if err != nil {
		return err
	}
	go func() {
		for {
			m, err := it.Next()
			if err != nil {
				s.fail(err)
				return
			}
			s.receive(m.Data(), time.Now().UnixNano())
		}
	}()
	return nil
}

// directKafka reads every partition of the topic from its end as the
// bridge's Kafka source does: a kafka-go Conn to the partition's leader,
// fetch after fetch with MinBytes 1, MaxBytes 8 MiB and MaxWait 500 ms,
// each message timed as it is read from the fetch's answer. A fetch that
// fails other than by timing out is retried on a new connection from the
// next offset, as the source does; the first such error is reported. The
// process's end ends it.
func directKafka(spec directSpec, s *stream) error {
	brokers := strings.Split(spec.Addr, ",")
	dial := func(part int, offset int64) (*kafka.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := kafka.DialLeader(ctx, "tcp", brokers[0], spec.Name, part)
		if err != nil {
			return nil, err
		}
		if offset < 0 {
			offset, err = conn.ReadLastOffset()
		}
		if err == nil {
			_, err = conn.Seek(offset, kafka.SeekAbsolute)
		}
		if err != nil {
			conn.Close()
			return nil, err
		}
		return conn, nil
	}
	conns := make([]*kafka.Conn, 0, spec.Partitions)
	for part := range spec.Partitions {
		conn, err := dial(part, -1)
		if err != nil {
			return err
		}
		conns = append(conns, conn)
	}
	const maxWait = 500 * time.Millisecond
	for part, conn := range conns {
		go func() {
			for {
				err := conn.SetReadDeadline(time.Now().Add(maxWait + 2*time.Second))
				if err == nil {
					batch := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: 8 << 20, MaxWait: maxWait})
					for {
						m, err := batch.ReadMessage()
						if err != nil {
							break
						}
						s.receive(m.Value, time.Now().UnixNano())
					}
					err = batch.Close()
				}
				if err == nil || errors.Is(err, io.EOF) || errors.Is(err, kafka.RequestTimedOut) {
					continue
				}
				s.fail(fmt.Errorf("partition %d (reconnected): %w", part, err))
				offset, _ := conn.Offset()
				conn.Close()
				for {
					if conn, err = dial(part, offset); err == nil {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	return nil
}

// firstReceipts holds, for each sequence number, the least latency with
// which a stream of the client process received the message: the time
// to the first client, without the time the fan-out takes to reach the
// others. It is safe for concurrent use.
type firstReceipts struct {
	lat  []atomic.Int64 // by sequence number, in nanoseconds; 0 means none yet
	mu   sync.Mutex     // guards from
	from uint64         // sequence numbers up to from were reported with reset
}

// firstCap bounds the sequence numbers timed: 8 MB, 1M messages.
const firstCap = 1 << 20

func newFirstReceipts() *firstReceipts { return &firstReceipts{lat: make([]atomic.Int64, firstCap)} }

// add records a receipt of message seq with latency d (nanoseconds).
func (f *firstReceipts) add(seq uint64, d int64) {
	if seq >= uint64(len(f.lat)) {
		return
	}
	d = max(d, 1)
	for {
		old := f.lat[seq].Load()
		if old != 0 && old <= d || f.lat[seq].CompareAndSwap(old, d) {
			return
		}
	}
}

// summary summarizes the messages received since the last summary with
// reset; with reset, the next starts after them.
func (f *firstReceipts) summary(reset bool) latency {
	f.mu.Lock()
	defer f.mu.Unlock()
	var h histogram
	last := f.from
	for seq := f.from + 1; seq < uint64(len(f.lat)); seq++ {
		if d := f.lat[seq].Load(); d != 0 {
			h.add(time.Duration(d))
			last = seq
		}
	}
	if reset {
		f.from = last
	}
	return h.summary()
}
