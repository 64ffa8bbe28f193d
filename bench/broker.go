// This file holds what the broker scenarios share: K and R on Kafka
// (kafka.go), Q and S on RabbitMQ (rabbitmq.go). Each runs the esbridge
// bridge (package bridge with one route of the broker's source) against a
// real broker.
//
// The server process serves lib "kafka" or "rabbitmq": a bridge with one
// route at /events on a stream (a topic, a stream queue) that the
// orchestrator creates and deletes at the end. Its publish sends to the
// broker instead of publishing to an EventSource, so the existing
// publishers (warm-up, "paced", "closed") drive the whole path: producer →
// broker → bridge → SSE clients.
//
// Event IDs are the bridge's opaque positions, so every message carries
// what the clients look for: the produce time in Unix nanoseconds (19
// digits, at the start, as the latency clients expect), a space, the
// sequence number ("w" for warm-up), a space, then 'x's up to -size bytes.
// Clients in broker mode count each sequence number once (a bitmap), and
// report those received twice as duplicates; order is not checked, since
// Kafka partitions are merged in no fixed order.

package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/esbridge/esbridge/bridge"
)

// A broker is what the broker scenarios need of one kind of broker, in the
// orchestrator.
type broker interface {
	// lib is the server process's library: "kafka" or "rabbitmq".
	lib() string
	// addr is the broker address of the server process's route.
	addr() string
	// create makes a fresh stream (a topic, a stream queue) whose name
	// starts with prefix; remove deletes it.
	create(prefix string) (string, error)
	remove(name string)
	// produce sends n bench payloads of size bytes to the stream name,
	// sequence numbers 1 to n, and returns when the broker has them all.
	produce(name string, n, size int) (rateResult, error)
	// readPlain reads the n messages of the stream name from its start
	// with the broker's usual Go client, as the bridge's source reads it:
	// the limit of the replay scenarios.
	readPlain(name string, n int) replayRun
	// source returns the bridge's source of the stream name.
	source(name string) (bridge.Source, error)
	// readers names the plain reader and the bridge's source, for tables.
	readers() (plain, source string)
}

// A producer sends the bench's messages to a broker, in the server
// process.
type producer interface {
	// send sends value, keyed by key where the broker has keys, without
	// waiting for the broker's acknowledgement. Errors are logged once.
	send(key string, value []byte)
	close()
}

// routeConfig is the route of a server process serving a broker.
type routeConfig struct {
	Addr     string // brokers (Kafka, comma-separated) or URL (RabbitMQ)
	Name     string // topic or stream queue
	Earliest bool   // start=earliest
	Keys     int    // if not 0, message seq is keyed k{seq%Keys} (scenario F)
}

func routeFlags(r *routeConfig) {
	flag.StringVar(&r.Addr, "route-addr", "", "internal: the broker of a kafka or rabbitmq server process")
	flag.StringVar(&r.Name, "route-name", "", "internal: the topic or stream a kafka or rabbitmq server process serves")
	flag.BoolVar(&r.Earliest, "route-earliest", false, "internal: serve the route with start=earliest")
	flag.IntVar(&r.Keys, "route-keys", 0, "internal: key message seq k{seq%N} instead of seq, and send each warm-up message once per key")
}

// routeArgs are the server process flags of a route on b's stream name.
func routeArgs(b broker, name string, earliest bool) []string {
	return []string{"-route-addr=" + b.addr(), "-route-name=" + name, fmt.Sprint("-route-earliest=", earliest)}
}

// bridgeServer is the bridge behind the server interface; publish
// produces to the broker.
type bridgeServer struct {
	b      *bridge.Bridge
	src    bridge.Source
	p      producer
	keys   int // routeConfig.Keys
	cancel context.CancelFunc
	done   chan struct{}
}

// newBridgeServer serves src at /events and publishes with p, once the
// route is ready.
func newBridgeServer(cfg serverConfig, src bridge.Source, p producer) (server, error) {
	b, err := bridge.New(bridge.Config{Backlog: cfg.backlog, ConnTakeover: true},
		bridge.Route{Path: "/events", Source: src, Options: bridge.Options{Earliest: cfg.route.Earliest}})
	if err != nil {
		p.close()
		src.Close()
		return nil, err
	}
	s := &bridgeServer{b: b, src: src, p: p, keys: cfg.route.Keys, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		defer close(s.done)
		_ = b.Run(ctx)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !b.Ready() {
		if time.Now().After(deadline) {
			s.close()
			return nil, fmt.Errorf("bridge on %s not ready in 30s", cfg.route.Name)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s, nil
}

func (s *bridgeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.b.ServeHTTP(w, r) }

// publish sends a message keyed id whose value is brokerPayload's, with
// the time at the start of data (a payload) if it has one. With keys, the
// message is keyed k{id%keys} instead, and a warm-up message (id "w") is
// sent once per key, so that every filtered client receives one.
func (s *bridgeServer) publish(id string, data []byte) {
	ts := time.Now().UnixNano()
	if len(data) >= 19 {
		if v, err := strconv.ParseInt(string(data[:19]), 10, 64); err == nil {
			ts = v
		}
	}
	if s.keys == 0 {
		s.p.send(id, brokerPayload(ts, id, len(data)))
		return
	}
	if id == "w" {
		for j := range s.keys {
			s.p.send(fmt.Sprint("k", j), brokerPayload(ts, id, len(data)))
		}
		return
	}
	seq, _ := strconv.ParseUint(id, 10, 64)
	s.p.send(fmt.Sprint("k", seq%uint64(s.keys)), brokerPayload(ts, id, len(data)))
}

func (s *bridgeServer) close() {
	s.p.close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = s.b.Shutdown(ctx)
	s.cancel()
	<-s.done
	_ = s.src.Close()
}

// brokerPayload returns "TS ID xxx…", at least size bytes.
func brokerPayload(ts int64, id string, size int) []byte {
	b := make([]byte, 0, max(size, 40))
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, ' ')
	b = append(b, id...)
	b = append(b, ' ')
	for len(b) < size {
		b = append(b, 'x')
	}
	return b
}

// What scanBroker found in an event.
const (
	brokerOther = iota // not a bench payload, or a duplicate
	brokerWarm
	brokerNew
)

// scanBroker looks at the data of one event in broker mode; now is the
// receive time for the latency histogram. s.mu must be held.
func (s *stream) scanBroker(d []byte, now int64) int {
	if len(d) < 21 || d[19] != ' ' {
		return brokerOther
	}
	rest := d[20:]
	j := bytes.IndexByte(rest, ' ')
	if j < 0 {
		return brokerOther
	}
	id := rest[:j]
	if len(id) == 1 && id[0] == 'w' {
		return brokerWarm
	}
	seq, ok := parseUint(id)
	if !ok {
		return brokerOther
	}
	w := int(seq / 64)
	for len(s.seen) <= w {
		s.seen = append(s.seen, make([]uint64, max(len(s.seen), 1024))...)
	}
	bit := uint64(1) << (seq % 64)
	if s.seen[w]&bit != 0 {
		s.dups++
		return brokerOther
	}
	s.seen[w] |= bit
	if s.keys > 0 && seq%uint64(s.keys) != uint64(s.key) {
		s.others++
		return brokerOther
	}
	if s.hist != nil {
		if ts, ok := parseUint(d[:19]); ok {
			s.hist.add(time.Duration(now - int64(ts)))
			if s.first != nil {
				s.first.add(seq, now-int64(ts))
			}
		}
	}
	return brokerNew
}

// Live scenarios: K and Q.

// liveOptions are the sizes of a live scenario.
type liveOptions struct {
	rate   int           // paced messages/s
	paced  time.Duration // paced producing time
	closed time.Duration // closed-loop producing time
}

// brokerRun is one run of a live scenario.
type brokerRun struct {
	Mode           string       `json:"mode"` // "paced" or "closed"
	Error          string       `json:"error,omitempty"`
	Run            runResult    `json:"run"`
	Client         clientReport `json:"client"`
	DeliveriesPerS float64      `json:"deliveriesPerSecond"`
	Machine        machineCPU   `json:"machine"`
}

// liveScenario runs scenario K or Q (letter) on a fresh stream of b: the
// paced run, then the closed loop.
func (o options) liveScenario(b broker, letter string, lo liveOptions) []brokerRun {
	name, err := b.create(strings.ToLower(letter))
	if err != nil {
		return []brokerRun{{Mode: "paced", Error: err.Error()}}
	}
	defer b.remove(name)
	return []brokerRun{o.liveRun(b, letter, name, "paced", lo), o.liveRun(b, letter, name, "closed", lo)}
}

// liveRun runs the paced (latency) or closed-loop (throughput) publisher
// of a live scenario through a fresh server and client process.
func (o options) liveRun(b broker, letter, name, mode string, lo liveOptions) (k brokerRun) {
	k.Mode = mode
	s, err := o.open(b.lib(), routeArgs(b, name, false)...)
	if err != nil {
		k.Error = err.Error()
		return k
	}
	defer s.close()
	if _, err := s.connect(o.clients, command{Latency: true, Broker: true, BufSize: 64 << 10, Progress: s.addr.Progress}); err != nil {
		k.Error = err.Error()
		return k
	}
	cmd := command{Cmd: mode, Rate: lo.rate, Duration: lo.paced, Window: o.window, Size: o.size,
		StallTimeout: o.stallTimeout, CPUProfile: o.profile(letter, mode, "cpu")}
	if mode == "closed" {
		cmd.Duration = lo.closed
	}
	machine := cpuMeter()
	if err := s.srv.call(cmd, &k.Run, cmd.Duration+o.stallTimeout+time.Minute); err != nil {
		k.Error = err.Error()
		return k
	}
	k.Machine = machine()
	if err := s.cli.call(command{Cmd: "report"}, &k.Client, time.Minute); err != nil {
		k.Error = err.Error()
		return k
	}
	if k.Run.Elapsed > 0 {
		k.DeliveriesPerS = float64(k.Run.Delivered) * float64(o.clients) / k.Run.Elapsed.Seconds()
	}
	return k
}

// Replay scenarios: R and S.

// replayOptions are the sizes of a replay scenario.
type replayOptions struct {
	messages int // in the stream
	runs     int // of each reader
}

// replayRes is the result of a replay scenario.
type replayRes struct {
	Error    string      `json:"error,omitempty"`
	Messages int         `json:"messages"`
	Produce  rateResult  `json:"produce"`
	Runs     []replayRun `json:"runs"`
	Ratio    float64     `json:"ratio"` // best SSE over best plain reader messages/s
}

type rateResult struct {
	N       int           `json:"n"`
	Elapsed time.Duration `json:"elapsed"`
	PerS    float64       `json:"perSecond"`
}

// replayRun is one read of the whole stream.
type replayRun struct {
	Reader    string        `json:"reader"` // e.g. "kafka-go" or "bridge SSE"
	Error     string        `json:"error,omitempty"`
	Rate      rateResult    `json:"rate"`
	Dups      uint64        `json:"duplicates"`
	Gaps      uint64        `json:"gaps"`
	ServerCPU time.Duration `json:"serverCPU,omitempty"` // the bridge process's
	ClientCPU time.Duration `json:"clientCPU"`           // this process's
	Machine   machineCPU    `json:"machine"`
}

func rate(n int, d time.Duration) rateResult {
	r := rateResult{N: n, Elapsed: d}
	if d > 0 {
		r.PerS = float64(n) / d.Seconds()
	}
	return r
}

// replayScenario runs scenario R or S (letter) on a fresh stream of b:
// it produces the messages, then reads them from the start, ro.runs times
// each, alternating: the plain reader, the bridge's source alone, one SSE
// client of the bridge.
func (o options) replayScenario(b broker, letter string, ro replayOptions) *replayRes {
	res := &replayRes{Messages: ro.messages}
	name, err := b.create(strings.ToLower(letter))
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer b.remove(name)
	o.logf("%s: producing %d messages", letter, ro.messages)
	if res.Produce, err = b.produce(name, ro.messages, o.size); err != nil {
		res.Error = err.Error()
		return res
	}
	plain, source := b.readers()
	var bestPlain, bestSSE float64
	for i := range ro.runs {
		o.logf("%s: run %d: %s", letter, i+1, plain)
		r := b.readPlain(name, ro.messages)
		bestPlain = max(bestPlain, r.Rate.PerS)
		res.Runs = append(res.Runs, r)
		o.logf("%s: run %d: %s", letter, i+1, source)
		res.Runs = append(res.Runs, readSource(b, name, ro.messages))
		o.logf("%s: run %d: bridge SSE", letter, i+1)
		r = o.replaySSE(b, letter, name, ro.messages, i+1)
		bestSSE = max(bestSSE, r.Rate.PerS)
		res.Runs = append(res.Runs, r)
	}
	if bestPlain > 0 {
		res.Ratio = bestSSE / bestPlain
	}
	return res
}

// readSource reads the stream from the start with the bridge's source
// alone (its Open and Next, in this process), without the bridge's event
// IDs, esource and HTTP.
func readSource(b broker, name string, n int) (r replayRun) {
	_, r.Reader = b.readers()
	src, err := b.source(name)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer src.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	machine := cpuMeter()
	cpu0 := cpuTime()
	start := time.Now()
	rd, err := src.Open(ctx, bridge.Start{Earliest: true})
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer rd.Close()
	got := 0
	for got < n {
		if _, err := rd.Next(ctx); err != nil {
			r.Error = err.Error()
			break
		}
		got++
	}
	r.Rate = rate(got, time.Since(start))
	r.ClientCPU = cpuTime() - cpu0
	r.Machine = machine()
	return r
}

// replaySSE starts a bridge serving the stream name with start=earliest
// and reads its route with one SSE client without a Last-Event-ID, from
// the start of the stream (the bridge's replay from the broker) until it
// has every one of the n messages. The client runs in this process.
func (o options) replaySSE(b broker, letter, name string, n, run int) (r replayRun) {
	r.Reader = "bridge SSE"
	srv, err := startChild("server "+b.lib(), o.verbose, append([]string{"-role=server", "-lib=" + b.lib(),
		fmt.Sprint("-backlog=", o.backlog), fmt.Sprint("-write-timeout=", o.writeTimeout), fmt.Sprint("-flush=", o.flush)},
		routeArgs(b, name, true)...)...)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer srv.kill()
	var addr hello
	if err := srv.call(command{}, &addr, 40*time.Second); err != nil {
		r.Error = err.Error()
		return r
	}
	var cpuStart, cpuEnd time.Duration
	if err := srv.call(command{Cmd: "prof", On: true, CPUProfile: o.profile(letter, "sse"+strconv.Itoa(run), "cpu")}, &cpuStart, 10*time.Second); err != nil {
		r.Error = err.Error()
		return r
	}
	s := &stream{broker: true}
	sem := make(chan struct{}, 1)
	sem <- struct{}{}
	machine := cpuMeter()
	cpu0 := cpuTime()
	start := time.Now()
	go s.run(&streamDialer{mode: tlsOff}, addr.HTTP, streamPath, 64<<10, sem)
	last, lastChange := uint64(0), time.Now()
	for {
		got := s.events.Load()
		if got >= uint64(n) || s.ended.Load() {
			break
		}
		if got != last {
			last, lastChange = got, time.Now()
		} else if time.Since(lastChange) > o.stallTimeout {
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	elapsed := time.Since(start)
	r.ClientCPU = cpuTime() - cpu0
	r.Machine = machine()
	if err := srv.call(command{Cmd: "prof"}, &cpuEnd, 10*time.Second); err == nil {
		r.ServerCPU = cpuEnd - cpuStart
	}
	got := s.events.Load()
	r.Rate = rate(int(got), elapsed)
	s.mu.Lock()
	r.Dups, r.Gaps = s.dups, s.gaps
	if s.gap != "" {
		r.Error = "gap: " + strings.ReplaceAll(strings.TrimSpace(s.gap), "\n", " | ")
	}
	if got < uint64(n) {
		r.Error = strings.TrimPrefix(r.Error+"; ", "; ") + fmt.Sprintf("received %d of %d messages", got, n)
		if s.err != nil {
			r.Error += ": " + s.err.Error()
		}
	}
	s.mu.Unlock()
	return r
}

// Tables.

// printLive writes the table of a live scenario under title.
func printLive(out io.Writer, title string, runs []brokerRun) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(cells ...any) {
		for _, c := range cells {
			fmt.Fprint(tw, c, "\t")
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintf(out, "\n%s\n", title)
	row("run", "produced", "produced/s", "elapsed", "deliveries/s", "p50", "p90", "p99", "max", "missing", "duplicates", "gaps", "server CPU", "client CPU", "idle CPU", "note")
	for _, k := range runs {
		if k.Error != "" {
			row(k.Mode, "", "", "", "", "", "", "", "", "", "", "", "", "", "", "error: "+k.Error)
			continue
		}
		prodRate := 0.0
		if k.Run.PublishTime > 0 {
			prodRate = float64(k.Run.Published) / k.Run.PublishTime.Seconds()
		}
		l := k.Client.Latency
		row(k.Mode, k.Run.Published, fmt.Sprintf("%.0f", prodRate), k.Run.Elapsed.Round(time.Millisecond),
			fmt.Sprintf("%.0f", k.DeliveriesPerS), ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max),
			missing(k.Run, k.Client), k.Client.Duplicates, k.Client.Gaps,
			pct(k.Run.CPU, k.Run.Elapsed), pct(k.Client.CPU, k.Run.Elapsed), idle(k.Machine), note(k.Run, k.Client, k.Machine))
	}
	tw.Flush()
}

// printReplay writes the table of a replay scenario under title; produced
// says how the messages were produced, plain names the plain reader.
func printReplay(out io.Writer, title, produced, plain string, rp *replayRes) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(cells ...any) {
		for _, c := range cells {
			fmt.Fprint(tw, c, "\t")
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintf(out, "\n%s\n", title)
	if rp.Error != "" {
		fmt.Fprintf(out, "error: %s\n", rp.Error)
	}
	fmt.Fprintf(out, "produced in %v: %.0f messages/s (%s)\n", rp.Produce.Elapsed.Round(time.Millisecond), rp.Produce.PerS, produced)
	row("run", "reader", "messages", "elapsed", "messages/s", "duplicates", "gaps", "bridge CPU", "reader CPU", "idle CPU", "note")
	for i, run := range rp.Runs {
		srvCPU := "-"
		if run.ServerCPU > 0 {
			srvCPU = pct(run.ServerCPU, run.Rate.Elapsed)
		}
		row(i/3+1, run.Reader, run.Rate.N, run.Rate.Elapsed.Round(time.Millisecond), fmt.Sprintf("%.0f", run.Rate.PerS),
			run.Dups, run.Gaps, srvCPU, pct(run.ClientCPU, run.Rate.Elapsed), idle(run.Machine), run.Error)
	}
	tw.Flush()
	fmt.Fprintf(out, "bridge SSE / %s (best runs): %.2fx\n", plain, rp.Ratio)
}
