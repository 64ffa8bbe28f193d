// This file holds the Kafka scenarios, K and R, which run the esbridge
// bridge (package bridge with a source/kafka route) against a real broker
// (-kafka-brokers, 127.0.0.1:9092 by default; scripts/kafka.sh starts one).
//
// The server process serves lib "kafka": a bridge with one route at
// /events on a topic the orchestrator creates (and deletes at the end).
// Its publish produces to the topic instead of publishing to an
// EventSource, so the existing publishers (warm-up, "paced", "closed")
// drive the whole path: producer → broker → bridge → SSE clients.
//
// Event IDs are the bridge's opaque positions, so every Kafka message value
// carries what the clients look for: the produce time in Unix nanoseconds
// (19 digits, at the start, as the latency clients expect), a space, the
// sequence number ("w" for warm-up), a space, then 'x's up to -size bytes.
// Clients in Kafka mode count each sequence number once (a bitmap), and
// report those received twice as duplicates; order is not checked, since
// partitions are merged in no fixed order.

package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esbridge/esbridge/bridge"
	kafkasource "github.com/esbridge/esbridge/source/kafka"
)

// kafkaOptions are the flags of the Kafka scenarios.
type kafkaOptions struct {
	brokers    string
	partitions int
	rate       int           // K: paced produce rate
	paced      time.Duration // K: paced producing time
	closed     time.Duration // K: closed-loop producing time
	messages   int           // R: messages in the topic
	replayRuns int           // R: runs of each reader
	server     kafkaConfig   // internal: the server process's route
}

// kafkaConfig is the route of a server process serving lib "kafka".
type kafkaConfig struct {
	Brokers  []string
	Topic    string
	Earliest bool
}

func kafkaFlags(k *kafkaOptions) {
	flag.StringVar(&k.brokers, "kafka-brokers", "127.0.0.1:9092", "Kafka brokers of scenarios K and R, comma-separated")
	flag.IntVar(&k.partitions, "kafka-partitions", 6, "partitions of the topics of scenarios K and R")
	flag.IntVar(&k.rate, "kafka-rate", 2000, "messages per second produced in scenario K's latency run")
	flag.DurationVar(&k.paced, "kafka-duration", 10*time.Second, "producing time of scenario K's latency run")
	flag.DurationVar(&k.closed, "kafka-closed-duration", 10*time.Second, "producing time of scenario K's throughput run (closed loop, -window)")
	flag.IntVar(&k.messages, "replay-messages", 1000000, "messages in scenario R's topic")
	flag.IntVar(&k.replayRuns, "replay-runs", 2, "runs of each reader in scenario R, alternating")
	flag.StringVar(&k.server.Topic, "kafka-topic", "", "internal: the topic a kafka server process serves")
	flag.BoolVar(&k.server.Earliest, "kafka-earliest", false, "internal: serve the route with start=earliest")
}

func (k kafkaOptions) brokerList() []string { return strings.Split(k.brokers, ",") }

// kafkaServer is the bridge behind the server interface; publish produces.
type kafkaServer struct {
	b      *bridge.Bridge
	src    *kafkasource.Source
	w      *kafka.Writer
	cancel context.CancelFunc
	done   chan struct{}
	errs   atomic.Uint64
}

func newKafkaServer(cfg serverConfig) (server, error) {
	k := cfg.kafka
	src, err := kafkasource.New(kafkasource.Config{Brokers: k.Brokers, Topic: k.Topic})
	if err != nil {
		return nil, err
	}
	b, err := bridge.New(bridge.Config{Backlog: cfg.backlog},
		bridge.Route{Path: "/events", Source: src, Options: bridge.Options{Earliest: k.Earliest}})
	if err != nil {
		return nil, err
	}
	s := &kafkaServer{b: b, src: src, done: make(chan struct{})}
	s.w = &kafka.Writer{
		Addr: kafka.TCP(k.Brokers...), Topic: k.Topic, Balancer: &kafka.Hash{},
		Async: true, BatchSize: 1000, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireOne,
		Completion: func(_ []kafka.Message, err error) {
			if err != nil && s.errs.Add(1) == 1 {
				fmt.Fprintln(os.Stderr, "bench: kafka server: produce:", err)
			}
		},
	}
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
			return nil, fmt.Errorf("bridge on topic %s not ready in 30s", k.Topic)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s, nil
}

func (s *kafkaServer) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.b.ServeHTTP(w, r) }

// publish produces a message keyed id whose value is kafkaPayload's, with
// the time at the start of data (a payload) if it has one.
func (s *kafkaServer) publish(id string, data []byte) {
	ts := time.Now().UnixNano()
	if len(data) >= 19 {
		if v, err := strconv.ParseInt(string(data[:19]), 10, 64); err == nil {
			ts = v
		}
	}
	m := kafka.Message{Key: []byte(id), Value: kafkaPayload(ts, id, len(data))}
	// Async: errors go to Completion.
	_ = s.w.WriteMessages(context.Background(), m)
}

func (s *kafkaServer) close() {
	_ = s.w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = s.b.Shutdown(ctx)
	s.cancel()
	<-s.done
	_ = s.src.Close()
}

// kafkaPayload returns "TS ID xxx…", at least size bytes.
func kafkaPayload(ts int64, id string, size int) []byte {
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

// What scanKafka found in an event.
const (
	kafkaOther = iota // not a bench payload, or a duplicate
	kafkaWarm
	kafkaNew
)

// scanKafka looks at the data of one event in Kafka mode; now is the
// receive time for the latency histogram. s.mu must be held.
func (s *stream) scanKafka(d []byte, now int64) int {
	if len(d) < 21 || d[19] != ' ' {
		return kafkaOther
	}
	rest := d[20:]
	j := bytes.IndexByte(rest, ' ')
	if j < 0 {
		return kafkaOther
	}
	id := rest[:j]
	if len(id) == 1 && id[0] == 'w' {
		return kafkaWarm
	}
	seq, ok := parseUint(id)
	if !ok {
		return kafkaOther
	}
	w := int(seq / 64)
	for len(s.seen) <= w {
		s.seen = append(s.seen, make([]uint64, max(len(s.seen), 1024))...)
	}
	bit := uint64(1) << (seq % 64)
	if s.seen[w]&bit != 0 {
		s.dups++
		return kafkaOther
	}
	s.seen[w] |= bit
	if s.hist != nil {
		if ts, ok := parseUint(d[:19]); ok {
			s.hist.add(time.Duration(now - int64(ts)))
		}
	}
	return kafkaNew
}

// prof starts (c.On) or stops a CPU profile, and returns the CPU time.
func (s *serverProc) prof(c command) time.Duration {
	if c.On && c.CPUProfile != "" {
		if f, err := os.Create(c.CPUProfile); err == nil {
			if err := pprof.StartCPUProfile(f); err != nil {
				f.Close()
			}
		}
	} else if !c.On {
		pprof.StopCPUProfile()
	}
	return cpuTime()
}

// Topics.

func (k kafkaOptions) client() *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(k.brokerList()...), Timeout: 30 * time.Second}
}

func (k kafkaOptions) createTopic(prefix string) (string, error) {
	name := fmt.Sprintf("esbridge-bench-%s-%d", prefix, time.Now().UnixNano())
	res, err := k.client().CreateTopics(context.Background(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: name, NumPartitions: k.partitions, ReplicationFactor: 1,
	}}})
	if err == nil {
		err = res.Errors[name]
	}
	if err != nil {
		return "", fmt.Errorf("create topic %s: %w", name, err)
	}
	return name, nil
}

func (k kafkaOptions) deleteTopic(name string) {
	var err error
	for range 3 { // the broker may be busy deleting the previous one
		var res *kafka.DeleteTopicsResponse
		res, err = k.client().DeleteTopics(context.Background(), &kafka.DeleteTopicsRequest{Topics: []string{name}})
		if err == nil {
			err = res.Errors[name]
		}
		if err == nil || errors.Is(err, kafka.UnknownTopicOrPartition) {
			return
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: delete topic %s: %v\n", name, err)
	}
}

// Scenario K.

// kafkaRun is one run of scenario K.
type kafkaRun struct {
	Mode           string       `json:"mode"` // "paced" or "closed"
	Error          string       `json:"error,omitempty"`
	Run            runResult    `json:"run"`
	Client         clientReport `json:"client"`
	DeliveriesPerS float64      `json:"deliveriesPerSecond"`
	Machine        machineCPU   `json:"machine"`
}

func (o options) kafkaScenario() []kafkaRun {
	topic, err := o.kafka.createTopic("k")
	if err != nil {
		return []kafkaRun{{Mode: "paced", Error: err.Error()}}
	}
	defer o.kafka.deleteTopic(topic)
	return []kafkaRun{o.kafkaRun(topic, "paced"), o.kafkaRun(topic, "closed")}
}

func (o options) kafkaServerArgs(topic string, earliest bool) []string {
	return []string{"-kafka-brokers=" + o.kafka.brokers, "-kafka-topic=" + topic, fmt.Sprint("-kafka-earliest=", earliest)}
}

// kafkaRun runs the paced (latency) or closed-loop (throughput) publisher
// of scenario K through a fresh server and client process.
func (o options) kafkaRun(topic, mode string) (k kafkaRun) {
	k.Mode = mode
	s, err := o.open("kafka", o.kafkaServerArgs(topic, false)...)
	if err != nil {
		k.Error = err.Error()
		return k
	}
	defer s.close()
	if _, err := s.connect(o.clients, command{Latency: true, Kafka: true, BufSize: 64 << 10, Progress: s.addr.Progress}); err != nil {
		k.Error = err.Error()
		return k
	}
	cmd := command{Cmd: mode, Rate: o.kafka.rate, Duration: o.kafka.paced, Window: o.window, Size: o.size,
		StallTimeout: o.stallTimeout, CPUProfile: o.profile("K", mode, "cpu")}
	if mode == "closed" {
		cmd.Duration = o.kafka.closed
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

// Scenario R.

// replayRes is the result of scenario R.
type replayRes struct {
	Error    string      `json:"error,omitempty"`
	Messages int         `json:"messages"`
	Produce  rateResult  `json:"produce"`
	Runs     []replayRun `json:"runs"`
	Ratio    float64     `json:"ratio"` // best SSE over best reader messages/s
}

type rateResult struct {
	N       int           `json:"n"`
	Elapsed time.Duration `json:"elapsed"`
	PerS    float64       `json:"perSecond"`
}

// replayRun is one read of the whole topic.
type replayRun struct {
	Reader    string        `json:"reader"` // "kafka-go" or "bridge SSE"
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

func (o options) replayScenario() *replayRes {
	res := &replayRes{Messages: o.kafka.messages}
	topic, err := o.kafka.createTopic("r")
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer o.kafka.deleteTopic(topic)
	o.logf("R: producing %d messages", o.kafka.messages)
	if res.Produce, err = o.kafka.produce(topic, o.kafka.messages, o.size); err != nil {
		res.Error = err.Error()
		return res
	}
	var bestReader, bestSSE float64
	for i := range o.kafka.replayRuns {
		o.logf("R: run %d: kafka-go readers", i+1)
		r := o.kafka.readAll(topic, o.kafka.messages)
		bestReader = max(bestReader, r.Rate.PerS)
		res.Runs = append(res.Runs, r)
		o.logf("R: run %d: kafkasource reader", i+1)
		res.Runs = append(res.Runs, o.kafka.readSource(topic, o.kafka.messages))
		o.logf("R: run %d: bridge SSE", i+1)
		r = o.replaySSE(topic, i+1)
		bestSSE = max(bestSSE, r.Rate.PerS)
		res.Runs = append(res.Runs, r)
	}
	if bestReader > 0 {
		res.Ratio = bestSSE / bestReader
	}
	return res
}

// produce writes n keyed messages of size bytes (sequence numbers 1..n)
// with four goroutines, each writing batches of 10,000 messages.
func (k kafkaOptions) produce(topic string, n, size int) (rateResult, error) {
	w := &kafka.Writer{
		Addr: kafka.TCP(k.brokerList()...), Topic: topic, Balancer: &kafka.Hash{},
		BatchSize: 10000, BatchBytes: 16 << 20, BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireOne,
	}
	defer w.Close()
	const chunk, workers = 10000, 4
	next := atomic.Int64{}
	var wg sync.WaitGroup
	errs := make([]error, workers)
	start := time.Now()
	for g := range workers {
		wg.Go(func() {
			msgs := make([]kafka.Message, 0, chunk)
			for {
				from := int(next.Add(chunk)) - chunk + 1
				if from > n {
					return
				}
				msgs = msgs[:0]
				now := time.Now().UnixNano()
				for seq := from; seq <= min(n, from+chunk-1); seq++ {
					id := strconv.Itoa(seq)
					msgs = append(msgs, kafka.Message{Key: []byte(id), Value: kafkaPayload(now, id, size)})
				}
				if err := w.WriteMessages(context.Background(), msgs...); err != nil {
					errs[g] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return rate(n, time.Since(start)), errors.Join(errs...)
}

// readAll reads every partition from its start to its end with one
// kafka-go partition reader (kafka.Reader) each, concurrently, with the
// fetch sizes and waits of the bridge's source, and counts the messages:
// what a plain kafka-go reader of this topic does, the reference of the
// ratio.
func (k kafkaOptions) readAll(topic string, n int) (r replayRun) {
	r.Reader = "kafka-go"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var total atomic.Int64
	errs := make([]error, k.partitions)
	var wg sync.WaitGroup
	machine := cpuMeter()
	cpu0 := cpuTime()
	start := time.Now()
	for p := range k.partitions {
		wg.Go(func() {
			kr := kafka.NewReader(kafka.ReaderConfig{
				Brokers: k.brokerList(), Topic: topic, Partition: p,
				QueueCapacity: 256, MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 500 * time.Millisecond, ReadLagInterval: -1,
			})
			defer kr.Close()
			if err := kr.SetOffset(kafka.FirstOffset); err != nil {
				errs[p] = err
				return
			}
			for {
				m, err := kr.FetchMessage(ctx)
				if err != nil {
					errs[p] = fmt.Errorf("partition %d: %w", p, err)
					return
				}
				total.Add(1)
				if m.Offset+1 >= m.HighWaterMark {
					return
				}
			}
		})
	}
	wg.Wait()
	r.Rate = rate(int(total.Load()), time.Since(start))
	r.ClientCPU = cpuTime() - cpu0
	r.Machine = machine()
	if err := errors.Join(errs...); err != nil {
		r.Error = err.Error()
	} else if int(total.Load()) != n {
		r.Error = fmt.Sprintf("read %d messages, want %d", total.Load(), n)
	}
	return r
}

// readSource reads the topic from the start with the bridge's source
// alone (source/kafka's Open and Next, in this process): its partition
// fetches merged through the source's channel, without the bridge's
// event IDs, esource and HTTP.
func (k kafkaOptions) readSource(topic string, n int) (r replayRun) {
	r.Reader = "kafkasource Next"
	src, err := kafkasource.New(kafkasource.Config{Brokers: k.brokerList(), Topic: topic})
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
	rd.Close()
	return r
}

// replaySSE starts a bridge serving topic with start=earliest and reads
// its route with one SSE client without a Last-Event-ID, from the start of
// the topic (the bridge's replay from the broker) until it has every one
// of the n messages. The client runs in this process.
func (o options) replaySSE(topic string, run int) (r replayRun) {
	r.Reader = "bridge SSE"
	srv, err := startChild("server kafka", o.verbose, append([]string{"-role=server", "-lib=kafka",
		fmt.Sprint("-backlog=", o.backlog), fmt.Sprint("-write-timeout=", o.writeTimeout), fmt.Sprint("-flush=", o.flush)},
		o.kafkaServerArgs(topic, true)...)...)
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
	if err := srv.call(command{Cmd: "prof", On: true, CPUProfile: o.profile("R", "sse"+strconv.Itoa(run), "cpu")}, &cpuStart, 10*time.Second); err != nil {
		r.Error = err.Error()
		return r
	}
	n := uint64(o.kafka.messages)
	s := &stream{kafka: true}
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n", streamPath, addr.HTTP)
	sem := make(chan struct{}, 1)
	sem <- struct{}{}
	machine := cpuMeter()
	cpu0 := cpuTime()
	start := time.Now()
	go s.run(addr.HTTP, req, 64<<10, sem)
	last, lastChange := uint64(0), time.Now()
	for {
		got := s.events.Load()
		if got >= n || s.ended.Load() {
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
	if got < n {
		r.Error = strings.TrimPrefix(r.Error+"; ", "; ") + fmt.Sprintf("received %d of %d messages", got, n)
		if s.err != nil {
			r.Error += ": " + s.err.Error()
		}
	}
	s.mu.Unlock()
	return r
}

// printKafka writes the tables of scenarios K and R.
func printKafka(out io.Writer, o options, r results) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(cells ...any) {
		for _, c := range cells {
			fmt.Fprint(tw, c, "\t")
		}
		fmt.Fprintln(tw)
	}
	if len(r.Kafka) > 0 {
		fmt.Fprintf(out, "\nK. Kafka to %d SSE clients, one bridge route on a %d-partition topic, %d-byte messages: %d/s for %v (paced), then closed loop (window %d) for %v; latency is produce to SSE receive\n",
			o.clients, o.kafka.partitions, o.size, o.kafka.rate, o.kafka.paced, o.window, o.kafka.closed)
		row("run", "produced", "produced/s", "elapsed", "deliveries/s", "p50", "p90", "p99", "max", "missing", "duplicates", "gaps", "server CPU", "client CPU", "idle CPU", "note")
		for _, k := range r.Kafka {
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
	if rp := r.Replay; rp != nil {
		fmt.Fprintf(out, "\nR. Replay catch-up: %d keyed %d-byte messages on %d partitions, read from the start\n",
			rp.Messages, o.size, o.kafka.partitions)
		if rp.Error != "" {
			fmt.Fprintf(out, "error: %s\n", rp.Error)
		}
		fmt.Fprintf(out, "produced in %v: %.0f messages/s (kafka.Writer, 4 goroutines × 10,000-message batches)\n",
			rp.Produce.Elapsed.Round(time.Millisecond), rp.Produce.PerS)
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
		fmt.Fprintf(out, "bridge SSE / kafka-go readers (best runs): %.2fx\n", rp.Ratio)
	}
}

// serverConfig returns the route of a server process, from the flags.
func (k kafkaOptions) serverConfig() kafkaConfig {
	c := k.server
	c.Brokers = k.brokerList()
	return c
}
