// This file holds scenario V, snapshot views (issue 22): a fresh compacted
// Kafka topic (cleanup.policy=compact, -snap-partitions, 1) holding
// -snap-keys distinct keys (100,000) of -snap-size-byte values (200), then
// -snap-rewrite of them written again (10,000; the table stays at
// -snap-keys keys, and the topic holds both rounds: the broker compacts
// only closed segments). Each of -snap-runs runs starts a fresh server
// process (-role=snap-server) serving one bridge route with snapshot=key
// and waits until its table is built, then measures, alternating which
// goes first:
//
//   - one plain kafka-go reader (a kafka.Reader per partition, as scenario
//     R's reference) reading the topic from its start to its end;
//   - -snap-clients SSE clients (1,000) connecting at once with
//     ?view=snapshot, each timing from its request to its snapshot-end
//     event and counting the entries between snapshot-begin and
//     snapshot-end (checked against -snap-keys and snapshot-end's keys).
//
// The server process measures its memory (heap in use and resident, after
// GC) before it creates the route, once the table is built, and after the
// crowd, and reports the table's bytes (RouteStats.Snapshot) and its peak
// resident memory (VmHWM).

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/esbridge/esbridge/bridge"
)

// snapOptions are the flags of scenario V.
type snapOptions struct {
	keys       int
	rewrite    int
	size       int
	clients    int
	partitions int
	runs       int
	timeout    time.Duration
	routeURL   string // internal: the route of a snap-server process
}

func snapFlags(s *snapOptions) {
	flag.IntVar(&s.keys, "snap-keys", 100000, "distinct keys of scenario V's topic: the snapshot's size")
	flag.IntVar(&s.rewrite, "snap-rewrite", 10000, "keys of scenario V written a second time")
	flag.IntVar(&s.size, "snap-size", 200, "value size in bytes in scenario V")
	flag.IntVar(&s.clients, "snap-clients", 1000, "SSE clients asking for a snapshot at once in scenario V")
	flag.IntVar(&s.partitions, "snap-partitions", 1, "partitions of scenario V's compacted topic")
	flag.IntVar(&s.runs, "snap-runs", 3, "runs of scenario V, each with a fresh bridge")
	flag.DurationVar(&s.timeout, "snap-timeout", 5*time.Minute, "how long scenario V's crowd may take")
	flag.StringVar(&s.routeURL, "snap-url", "", "internal: the route URL of a snap-server process")
}

// snapHello is the first reply of a snap-server process.
type snapHello struct {
	HTTP   string               `json:"http"`
	Before memResult            `json:"before"` // before the route
	Ready  memResult            `json:"ready"`  // the table built
	Build  time.Duration        `json:"build"`  // route created to table built
	Table  bridge.SnapshotStats `json:"table"`
}

// snapMem is the reply to a snap-server's "mem".
type snapMem struct {
	Mem   memResult            `json:"mem"`
	Peak  uint64               `json:"peakRSS"` // VmHWM
	Table bridge.SnapshotStats `json:"table"`
}

// runSnapServer serves one route at /events built from routeURL (with
// snapshot=key) once its table is built, and answers "mem" and "prof".
func runSnapServer(routeURL string, backlog int) error {
	raiseNoFile()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var h snapHello
	var err error
	if h.Before, err = measureMem(""); err != nil {
		return err
	}
	start := time.Now()
	rs, err := openRoute(routeURL, backlog, logger, nil)
	if err != nil {
		return err
	}
	defer rs.close()
	b, ctx := rs.b, context.Background()
	table := func() bridge.SnapshotStats {
		if st := b.Stats(ctx); len(st) == 1 && st[0].Snapshot != nil {
			return *st[0].Snapshot
		}
		return bridge.SnapshotStats{}
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if h.Table = table(); h.Table.Ready && b.Ready() {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("snapshot table not built in 2m: %+v", h.Table)
		}
	}
	h.Build = time.Since(start)
	if h.Ready, err = measureMem(""); err != nil {
		return err
	}
	if h.HTTP, err = rs.listen(); err != nil {
		return err
	}
	r := replier{enc: json.NewEncoder(os.Stdout)}
	r.reply(h)
	var s serverProc
	for c := range commands {
		switch c.Cmd {
		case "prof":
			r.reply(s.prof(c))
		case "mem":
			m, err := measureMem(c.HeapProfile)
			if err != nil {
				r.fail(err)
				continue
			}
			peak := procStatus(os.Getpid(), "VmHWM")
			r.reply(snapMem{Mem: m, Peak: peak, Table: table()})
		default:
			r.fail(fmt.Errorf("unknown command %q", c.Cmd))
		}
	}
	return nil
}

// snapRes is the result of scenario V.
type snapRes struct {
	Error    string     `json:"error,omitempty"`
	Topic    string     `json:"topic"`
	Messages int        `json:"messages"` // in the topic: keys and rewrites
	Produce  rateResult `json:"produce"`
	Runs     []snapRun  `json:"runs"`
}

// snapRun is one run of scenario V.
type snapRun struct {
	Error       string               `json:"error,omitempty"`
	ReaderFirst bool                 `json:"readerFirst"`
	Build       time.Duration        `json:"build"` // the route's table
	Reader      replayRun            `json:"reader"`
	Crowd       snapCrowd            `json:"crowd"`
	Before      memResult            `json:"before"`
	Ready       memResult            `json:"ready"`
	After       snapMem              `json:"after"`
	Table       bridge.SnapshotStats `json:"table"`
	ServerCPU   time.Duration        `json:"serverCPU"` // during the crowd
}

// snapCrowd is what the clients of one run saw.
type snapCrowd struct {
	Clients  int           `json:"clients"`
	Complete int           `json:"complete"` // reached snapshot-end with every key
	Errors   []string      `json:"errors,omitempty"`
	P50      time.Duration `json:"p50"`
	P99      time.Duration `json:"p99"`
	Max      time.Duration `json:"max"`
	Min      time.Duration `json:"min"`
	Elapsed  time.Duration `json:"elapsed"` // first request to last snapshot-end
	Bytes    int64         `json:"bytes"`   // read by all clients
	Machine  machineCPU    `json:"machine"`
}

// snapScenario runs scenario V.
func (o options) snapScenario() *snapRes {
	so := o.snap
	kb := o.kafka
	kb.partitions = so.partitions
	b := kafkaBroker{kb}
	res := &snapRes{Messages: so.keys + min(so.rewrite, so.keys)}
	name := fmt.Sprintf("esbridge-bench-v-%d", time.Now().UnixNano())
	cres, err := b.client().CreateTopics(context.Background(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: name, NumPartitions: so.partitions, ReplicationFactor: 1,
		// The producer's batches (kafka.go) are larger than the default
		// 1 MB a batch.
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "compact"},
			{ConfigName: "max.message.bytes", ConfigValue: strconv.Itoa(16 << 20)}},
	}}})
	if err == nil {
		err = cres.Errors[name]
	}
	if err != nil {
		res.Error = fmt.Sprintf("create topic %s: %v", name, err)
		return res
	}
	defer b.remove(name)
	res.Topic = name
	o.logf("V: producing %d keys, then %d again", so.keys, min(so.rewrite, so.keys))
	t0 := time.Now()
	if _, err := b.produce(name, so.keys, so.size); err != nil {
		res.Error = err.Error()
		return res
	}
	if so.rewrite > 0 {
		if _, err := b.produce(name, min(so.rewrite, so.keys), so.size); err != nil {
			res.Error = err.Error()
			return res
		}
	}
	res.Produce = rate(res.Messages, time.Since(t0))
	route := fmt.Sprintf("kafka://%s/%s?snapshot=key", b.brokerList()[0], url.PathEscape(name))
	for i := range so.runs {
		res.Runs = append(res.Runs, o.snapRun(b, route, name, res.Messages, i+1, i%2 == 0))
	}
	return res
}

// snapRun starts a snap-server, then reads the topic with a plain reader
// and serves the crowd, in the order readerFirst says.
func (o options) snapRun(b kafkaBroker, route, name string, messages, run int, readerFirst bool) (r snapRun) {
	r.ReaderFirst = readerFirst
	o.logf("V: run %d: building the table", run)
	srv, err := startChild("snap-server", o.verbose, "-role=snap-server", "-snap-url="+route,
		fmt.Sprint("-backlog=", o.backlog))
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer srv.kill()
	var h snapHello
	if err := srv.call(command{}, &h, 3*time.Minute); err != nil {
		r.Error = err.Error()
		return r
	}
	r.Build, r.Before, r.Ready, r.Table = h.Build, h.Before, h.Ready, h.Table
	reader := func() {
		o.logf("V: run %d: kafka-go reader", run)
		r.Reader = b.readPlain(name, messages)
	}
	crowd := func() {
		o.logf("V: run %d: %d clients", run, o.snap.clients)
		var cpu0, cpu1 time.Duration
		_ = srv.call(command{Cmd: "prof", On: true, CPUProfile: o.profile("V", "crowd"+strconv.Itoa(run), "cpu")}, &cpu0, 10*time.Second)
		r.Crowd = snapCrowdRun(h.HTTP, o.snap.clients, o.snap.keys, o.snap.timeout)
		if srv.call(command{Cmd: "prof"}, &cpu1, 10*time.Second) == nil {
			r.ServerCPU = cpu1 - cpu0
		}
	}
	if readerFirst {
		reader()
		crowd()
	} else {
		crowd()
		reader()
	}
	if err := srv.call(command{Cmd: "mem", HeapProfile: o.profile("V", "after"+strconv.Itoa(run), "heap")}, &r.After, time.Minute); err != nil {
		r.Error = err.Error()
	}
	return r
}

// snapCrowdRun connects n clients at once to addr's /events with
// ?view=snapshot and times each to its snapshot-end.
func snapCrowdRun(addr string, n, keys int, timeout time.Duration) (c snapCrowd) {
	c.Clients = n
	raiseNoFile()
	tr := &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: 0, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	times := make([]time.Duration, n)
	errs := make([]error, n)
	bytesRead := make([]int64, n)
	var ready, wg sync.WaitGroup
	ready.Add(n)
	gate := make(chan struct{})
	machine := cpuMeter()
	for i := range n {
		wg.Go(func() {
			ready.Done()
			<-gate
			times[i], bytesRead[i], errs[i] = snapClient(ctx, hc, "http://"+addr+"/events?view=snapshot", keys)
		})
	}
	ready.Wait()
	start := time.Now()
	close(gate)
	wg.Wait()
	c.Elapsed = time.Since(start)
	c.Machine = machine()
	var ok []time.Duration
	for i, err := range errs {
		c.Bytes += bytesRead[i]
		if err != nil {
			if len(c.Errors) < 5 {
				c.Errors = append(c.Errors, err.Error())
			}
			continue
		}
		ok = append(ok, times[i])
	}
	c.Complete = len(ok)
	if len(ok) > 0 {
		slices.Sort(ok)
		c.Min, c.P50, c.P99, c.Max = ok[0], ok[len(ok)/2], ok[min(len(ok)-1, len(ok)*99/100)], ok[len(ok)-1]
	}
	return c
}

// snapClient asks for a snapshot and reads until snapshot-end: the time
// from the request, the bytes read, and an error unless the snapshot held
// keys entries between snapshot-begin and snapshot-end, as many as
// snapshot-end says.
func snapClient(ctx context.Context, hc *http.Client, u string, keys int) (time.Duration, int64, error) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("status %s", resp.Status)
	}
	cr := &countReader{r: resp.Body}
	br := bufio.NewReaderSize(cr, 64<<10)
	var (
		typ     []byte
		data    []byte
		hasData bool
		began   bool
		entries int
	)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, cr.n, fmt.Errorf("after %d entries: %w", entries, err)
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0:
			if hasData {
				switch string(typ) {
				case "snapshot-begin":
					began, entries = true, 0
				case "snapshot-end":
					elapsed := time.Since(start)
					var end struct{ Keys int }
					if err := json.Unmarshal(data, &end); err != nil {
						return 0, cr.n, fmt.Errorf("snapshot-end %q: %w", data, err)
					}
					if !began || entries != keys || end.Keys != keys {
						return 0, cr.n, fmt.Errorf("snapshot of %d entries, snapshot-end says %d, want %d", entries, end.Keys, keys)
					}
					return elapsed, cr.n, nil
				case "", "message", "binary":
					if began {
						entries++
					}
				default:
					return 0, cr.n, fmt.Errorf("event %q in the snapshot", typ)
				}
			}
			typ, hasData = typ[:0], false
		case bytes.HasPrefix(line, []byte("event:")):
			typ = append(typ[:0], bytes.TrimSpace(line[6:])...)
		case bytes.HasPrefix(line, []byte("data:")):
			if !hasData || string(typ) == "snapshot-end" {
				data = append(data[:0], bytes.TrimPrefix(line[5:], []byte(" "))...)
			}
			hasData = true
		}
	}
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// printSnap writes scenario V's table.
func printSnap(out io.Writer, o options, r *snapRes) {
	so := o.snap
	fmt.Fprintf(out, "\nV. Snapshot views: a compacted %d-partition Kafka topic of %d keys (%d-byte values, %d of them written twice: %d messages), one bridge route with snapshot=key; %d SSE clients asking ?view=snapshot at once, against one plain kafka-go reader of the topic from its start\n",
		so.partitions, so.keys, so.size, min(so.rewrite, so.keys), r.Messages, so.clients)
	if r.Error != "" {
		fmt.Fprintf(out, "error: %.300s\n", r.Error)
		return
	}
	fmt.Fprintf(out, "produced in %v: %.0f messages/s\n", r.Produce.Elapsed.Round(time.Millisecond), r.Produce.PerS)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(cells ...any) {
		for _, c := range cells {
			fmt.Fprint(tw, c, "\t")
		}
		fmt.Fprintln(tw)
	}
	mib := func(b uint64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }
	row("run", "first", "table build", "reader", "reader msgs/s", "complete", "min", "p50", "p99", "max", "crowd", "crowd MB/s", "p99/reader", "bridge CPU", "idle CPU", "note")
	for i, run := range r.Runs {
		if run.Error != "" && run.Crowd.Clients == 0 {
			row(i+1, "", "", "", "", "", "", "", "", "", "", "", "", "", "", "error: "+run.Error)
			continue
		}
		first := "clients"
		if run.ReaderFirst {
			first = "reader"
		}
		note := strings.Join(run.Crowd.Errors, "; ")
		if run.Reader.Error != "" {
			note = strings.TrimPrefix(note+"; reader: "+run.Reader.Error, "; ")
		}
		if run.Error != "" {
			note = strings.TrimPrefix(note+"; "+run.Error, "; ")
		}
		ratio := "-"
		if run.Reader.Rate.Elapsed > 0 {
			ratio = fmt.Sprintf("%.1fx", float64(run.Crowd.P99)/float64(run.Reader.Rate.Elapsed))
		}
		row(i+1, first, run.Build.Round(time.Millisecond), run.Reader.Rate.Elapsed.Round(time.Millisecond), fmt.Sprintf("%.0f", run.Reader.Rate.PerS),
			fmt.Sprintf("%d/%d", run.Crowd.Complete, run.Crowd.Clients), ms(run.Crowd.Min), ms(run.Crowd.P50), ms(run.Crowd.P99), ms(run.Crowd.Max),
			run.Crowd.Elapsed.Round(time.Millisecond), fmt.Sprintf("%.0f", float64(run.Crowd.Bytes)/(1<<20)/run.Crowd.Elapsed.Seconds()),
			ratio, pct(run.ServerCPU, run.Crowd.Elapsed), idle(run.Crowd.Machine), note)
	}
	tw.Flush()
	fmt.Fprintln(out, "bridge process memory, MiB (after GC): heap in use and resident before the route, with the table built, after the crowd; peak resident; the table's bytes (keys, encoded events, 128 a key)")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	row("run", "keys", "table", "heap before", "heap ready", "heap after", "RSS before", "RSS ready", "RSS after", "peak RSS", "(heap ready-before)/table", "(RSS ready-before)/table", "(peak-before)/table")
	for i, run := range r.Runs {
		if run.Table.Bytes == 0 {
			continue
		}
		tb := float64(run.Table.Bytes)
		row(i+1, run.Table.Keys, mib(uint64(run.Table.Bytes)),
			mib(run.Before.HeapInuse), mib(run.Ready.HeapInuse), mib(run.After.Mem.HeapInuse),
			mib(run.Before.RSS), mib(run.Ready.RSS), mib(run.After.Mem.RSS), mib(run.After.Peak),
			fmt.Sprintf("%.2f", (float64(run.Ready.HeapInuse)-float64(run.Before.HeapInuse))/tb),
			fmt.Sprintf("%.2f", (float64(run.Ready.RSS)-float64(run.Before.RSS))/tb),
			fmt.Sprintf("%.2f", (float64(run.After.Peak)-float64(run.Before.RSS))/tb))
	}
	tw.Flush()
}
