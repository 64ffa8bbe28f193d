// This file is scenario W, a wide crowd: -wide-clients streams (15,000 by
// default) receiving -wide-rate events/s (10), each carrying its publish
// time, from esource and from the baseline "plain" (plain.go), a shared-log
// fan-out on plain net/http; -wide-libs can add "poller" (poller.go), with
// no goroutine per connection.
//
// Each server has its own process and its own client process, and both
// crowds stay connected for the whole scenario: the servers take turns,
// publishing for -wide-duration each, -wide-runs rounds, the order
// alternating from one round to the next. A shared, busy machine thus
// weighs on both alike; the table gives each turn, the latencies over all
// turns, each server's memory per connection after the last turn (GC'd,
// the streams open), and each server's figures over plain's.

package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// wideLibs are the servers scenario W can compare (-wide-libs); -libs
// does not apply. The last, "plain", is the baseline of the ratios.
var wideLibs = []string{"esource", "poller", "plain"}

// wideOptions are the flags of scenario W.
type wideOptions struct {
	clients  int
	rate     int
	duration time.Duration
	runs     int
	libs     []string // some of wideLibs, esource and plain by default
}

// wideLib is one server's result in scenario W.
type wideLib struct {
	Lib         string        `json:"lib"`
	Error       string        `json:"error,omitempty"`
	Connect     connectResult `json:"connect"`
	Turns       []wideTurn    `json:"turns"`
	Published   uint64        `json:"published"` // over the turns
	Client      clientReport  `json:"client"`    // after the last turn; Total is over the turns
	Before      memResult     `json:"before"`    // before the clients connect
	After       memResult     `json:"after"`     // after the last turn, clients connected
	HeapStackKB float64       `json:"heapStackKBPerConn"`
	RSSKB       float64       `json:"rssKBPerConn"`
	Goroutines  float64       `json:"goroutinesPerConn"`

	s *session
}

// wideTurn is one server's publishing turn.
type wideTurn struct {
	Round   int        `json:"round"`
	Run     runResult  `json:"run"`
	Latency latency    `json:"latency"`
	Machine machineCPU `json:"machine"`
}

// wideScenario runs scenario W.
func (o options) wideScenario() []*wideLib {
	libs := make([]*wideLib, len(o.wide.libs))
	for i, lib := range o.wide.libs {
		libs[i] = &wideLib{Lib: lib}
		if !slices.Contains(wideLibs, lib) {
			libs[i].Error = fmt.Sprintf("unknown library %q in -wide-libs (want some of %v)", lib, wideLibs)
		}
	}
	fail := func(w *wideLib, err error) {
		w.Error = err.Error()
		if w.s != nil {
			w.s.close()
			w.s = nil
		}
	}
	defer func() {
		for _, w := range libs {
			if w.s != nil {
				w.s.close()
			}
		}
	}()
	// Each process holds a crowd: the orchestrator's limit is inherited.
	if err := fileLimit(o.wide.clients + 1024); err != nil {
		for _, w := range libs {
			fail(w, err)
		}
		return libs
	}
	for _, w := range libs {
		if w.Error != "" {
			continue
		}
		o.logf("W %s: %d clients", w.Lib, o.wide.clients)
		s, err := o.open(w.Lib)
		if err != nil {
			fail(w, err)
			continue
		}
		w.s = s
		if err := s.srv.call(command{Cmd: "mem"}, &w.Before, time.Minute); err != nil {
			fail(w, err)
			continue
		}
		// Small read buffers: the events are small and slow, and the
		// client process holds every stream.
		w.Connect, err = s.connect(o.wide.clients, command{Latency: true, BufSize: 4 << 10, Progress: s.addr.Progress})
		if err != nil {
			fail(w, err)
			continue
		}
		// Drop the warm-up events' latencies.
		if err := s.cli.call(command{Cmd: "report", Reset: true}, &w.Client, time.Minute); err != nil {
			fail(w, err)
		}
	}
	for round := 1; round <= o.wide.runs; round++ {
		order := slices.Clone(libs)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, w := range order {
			if w.s == nil {
				continue
			}
			o.logf("W %s, round %d", w.Lib, round)
			t := wideTurn{Round: round}
			cmd := command{Cmd: "paced", Rate: o.wide.rate, Duration: o.wide.duration, Size: o.size,
				StallTimeout: o.stallTimeout, CPUProfile: o.profile(fmt.Sprint("W", round), w.Lib, "cpu")}
			machine := cpuMeter()
			if err := w.s.srv.call(cmd, &t.Run, o.wide.duration+o.stallTimeout+time.Minute); err != nil {
				fail(w, err)
				continue
			}
			t.Machine = machine()
			if err := w.s.cli.call(command{Cmd: "report", Reset: true}, &w.Client, time.Minute); err != nil {
				fail(w, err)
				continue
			}
			t.Latency = w.Client.Latency
			w.Published += t.Run.Published
			w.Turns = append(w.Turns, t)
		}
	}
	n := float64(o.wide.clients)
	for _, w := range libs {
		if w.s == nil {
			continue
		}
		if err := w.s.srv.call(command{Cmd: "mem", HeapProfile: o.profile("W", w.Lib, "heap")}, &w.After, time.Minute); err != nil {
			fail(w, err)
			continue
		}
		kb := func(after, before uint64) float64 { return (float64(after) - float64(before)) / 1024 / n }
		w.HeapStackKB = kb(w.After.HeapInuse+w.After.StackInuse, w.Before.HeapInuse+w.Before.StackInuse)
		w.RSSKB = kb(w.After.RSS, w.Before.RSS)
		w.Goroutines = float64(w.After.Goroutines-w.Before.Goroutines) / n
	}
	return libs
}

// fileLimit makes sure that this process, and the children it starts, may
// open need files: it raises RLIMIT_NOFILE, the hard limit too if it must
// and may (as root).
func fileLimit(need int) error {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return err
	}
	want := uint64(need)
	if rl.Cur >= want {
		return nil
	}
	// Setting the limit also makes the children inherit it, where Go would
	// otherwise restore the soft limit it found at startup.
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: max(rl.Max, want)}); err != nil {
		return fmt.Errorf("open files limited to %d (hard %d), %d needed: %w", rl.Cur, rl.Max, need, err)
	}
	return nil
}

// printWide writes the tables of scenario W.
func printWide(out io.Writer, o options, libs []*wideLib) {
	fmt.Fprintf(out, "\nW. Wide crowd: %d clients per server, %s, %d events/s (%d bytes), publish to receive; the servers take turns of %v, %d rounds\n",
		o.wide.clients, transport(o.tls), o.wide.rate, o.size, o.wide.duration, o.wide.runs)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(cells ...any) {
		for _, c := range cells {
			fmt.Fprint(tw, c, "\t")
		}
		fmt.Fprintln(tw)
	}
	row("round", "library", "events", "p50", "p90", "p99", "max", "server CPU", "idle CPU", "note")
	for round := 1; round <= o.wide.runs; round++ {
		for _, w := range libs {
			for _, t := range w.Turns {
				if t.Round == round {
					l := t.Latency
					row(round, w.Lib, t.Run.Published, ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max),
						pct(t.Run.CPU, t.Run.Elapsed), idle(t.Machine), note(t.Run, clientReport{}, t.Machine))
				}
			}
		}
	}
	tw.Flush()
	fmt.Fprintln(out)
	row("all rounds", "events", "p50", "p90", "p99", "max", "heap+stack KB/conn", "RSS KB/conn", "goroutines/conn", "missing", "gaps", "disorder", "note")
	for _, w := range libs {
		if w.Error != "" && len(w.Turns) == 0 {
			row(w.Lib, "", "", "", "", "", "", "", "", "", "", "", "error: "+w.Error)
			continue
		}
		l := w.Client.Total
		var missing uint64
		if w.Client.MinEvents < w.Published {
			missing = w.Published - w.Client.MinEvents
		}
		var n []string
		if w.Client.Errors > 0 {
			n = append(n, fmt.Sprintf("%d client errors: %s", w.Client.Errors, w.Client.FirstError))
		}
		if w.Error != "" {
			n = append(n, "error: "+w.Error)
		}
		row(w.Lib, w.Published, ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max),
			fmt.Sprintf("%.1f", w.HeapStackKB), fmt.Sprintf("%.1f", w.RSSKB), fmt.Sprintf("%.2f", w.Goroutines),
			missing, w.Client.Gaps, w.Client.Disorder, strings.Join(n, "; "))
	}
	tw.Flush()

	var pl *wideLib
	for _, w := range libs {
		if w.Lib == "plain" && w.Error == "" {
			pl = w
		}
	}
	if pl == nil {
		return
	}
	ratio := func(a, b float64) string {
		if b <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", a/b)
	}
	for _, es := range libs {
		if es == pl || es.Error != "" {
			continue
		}
		var rounds []string
		for i := range min(len(es.Turns), len(pl.Turns)) {
			rounds = append(rounds, ratio(float64(es.Turns[i].Latency.P99), float64(pl.Turns[i].Latency.P99)))
		}
		e, p := es.Client.Total, pl.Client.Total
		fmt.Fprintf(out, "\n%s/plain: p50 %s, p99 %s, max %s over all rounds (p99 in each round: %s); memory per connection %s (heap+stack), %s (RSS)\n",
			es.Lib, ratio(float64(e.P50), float64(p.P50)), ratio(float64(e.P99), float64(p.P99)), ratio(float64(e.Max), float64(p.Max)),
			strings.Join(rounds, ", "), ratio(es.HeapStackKB, pl.HeapStackKB), ratio(es.RSSKB, pl.RSSKB))
	}
}
