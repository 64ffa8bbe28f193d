// This file is scenario W, a wide crowd: -wide-clients streams (15,000 by
// default) receiving -wide-rate events/s (10), each carrying its publish
// time, from esource and from the baseline "plain" (plain.go), a shared-log
// fan-out on plain net/http. Each is measured in a server process of its
// own, one after the other, -wide-runs times, alternating which goes first;
// each run reports the publish-to-receive percentiles and the server's
// memory per connection while the streams are open, and the ratios of
// esource's figures to plain's in the same round.

package main

import (
	"fmt"
	"io"
	"syscall"
	"text/tabwriter"
	"time"
)

// wideLibs are the servers scenario W compares; -libs does not apply.
var wideLibs = []string{"esource", "plain"}

// wideOptions are the flags of scenario W.
type wideOptions struct {
	clients  int
	rate     int
	duration time.Duration
	runs     int
}

// wideRun is one library's result in one round of scenario W.
type wideRun struct {
	Lib         string        `json:"lib"`
	Round       int           `json:"round"`
	Error       string        `json:"error,omitempty"`
	Connect     connectResult `json:"connect"`
	Run         runResult     `json:"run"`
	Client      clientReport  `json:"client"`
	Machine     machineCPU    `json:"machine"`
	Before      memResult     `json:"before"` // before the clients connect
	After       memResult     `json:"after"`  // after the run, clients connected
	HeapStackKB float64       `json:"heapStackKBPerConn"`
	RSSKB       float64       `json:"rssKBPerConn"`
	Goroutines  float64       `json:"goroutinesPerConn"`
}

// wideScenario runs scenario W: o.wide.runs rounds of every library in wideLibs, the
// order alternating from one round to the next.
func (o options) wideScenario() []wideRun {
	var runs []wideRun
	if err := fileLimit(o.wide.clients + 1024); err != nil {
		for _, lib := range wideLibs {
			runs = append(runs, wideRun{Lib: lib, Round: 1, Error: err.Error()})
		}
		return runs
	}
	for round := 1; round <= o.wide.runs; round++ {
		for i := range wideLibs {
			lib := wideLibs[i]
			if round%2 == 0 {
				lib = wideLibs[len(wideLibs)-1-i]
			}
			o.logf("W %s, round %d", lib, round)
			runs = append(runs, o.wideRun(lib, round))
		}
	}
	return runs
}

func (o options) wideRun(lib string, round int) (w wideRun) {
	w.Lib, w.Round = lib, round
	s, err := o.open(lib)
	if err != nil {
		w.Error = err.Error()
		return w
	}
	defer s.close()
	if err := s.srv.call(command{Cmd: "mem"}, &w.Before, time.Minute); err != nil {
		w.Error = err.Error()
		return w
	}
	// Small read buffers: the events are small and slow, and the client
	// process holds every stream.
	w.Connect, err = s.connect(o.wide.clients, command{Latency: true, BufSize: 4 << 10, Progress: s.addr.Progress})
	if err != nil {
		w.Error = err.Error()
		return w
	}
	cmd := command{Cmd: "paced", Rate: o.wide.rate, Duration: o.wide.duration, Size: o.size,
		StallTimeout: o.stallTimeout, CPUProfile: o.profile(fmt.Sprint("W", round), lib, "cpu")}
	machine := cpuMeter()
	if err := s.srv.call(cmd, &w.Run, o.wide.duration+o.stallTimeout+time.Minute); err != nil {
		w.Error = err.Error()
		return w
	}
	w.Machine = machine()
	if err := s.srv.call(command{Cmd: "mem", HeapProfile: o.profile(fmt.Sprint("W", round), lib, "heap")}, &w.After, time.Minute); err != nil {
		w.Error = err.Error()
		return w
	}
	if err := s.cli.call(command{Cmd: "report"}, &w.Client, time.Minute); err != nil {
		w.Error = err.Error()
		return w
	}
	n := float64(o.wide.clients)
	kb := func(after, before uint64) float64 { return (float64(after) - float64(before)) / 1024 / n }
	w.HeapStackKB = kb(w.After.HeapInuse+w.After.StackInuse, w.Before.HeapInuse+w.Before.StackInuse)
	w.RSSKB = kb(w.After.RSS, w.Before.RSS)
	w.Goroutines = float64(w.After.Goroutines-w.Before.Goroutines) / n
	return w
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

// printWide writes the table of scenario W.
func printWide(out io.Writer, o options, runs []wideRun) {
	fmt.Fprintf(out, "\nW. Wide crowd: %d clients, %d events/s (%d bytes) for %v, publish to receive; server memory per connection after the run, clients connected, after GC; esource/plain within a round\n",
		o.wide.clients, o.wide.rate, o.size, o.wide.duration)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(cells ...any) {
		for _, c := range cells {
			fmt.Fprint(tw, c, "\t")
		}
		fmt.Fprintln(tw)
	}
	row("round", "library", "events", "p50", "p90", "p99", "max", "heap+stack KB/conn", "RSS KB/conn", "goroutines/conn",
		"missing", "gaps", "disorder", "server CPU", "idle CPU", "note")
	for _, w := range runs {
		if w.Error != "" {
			row(w.Round, w.Lib, "", "", "", "", "", "", "", "", "", "", "", "", "", "error: "+w.Error)
			continue
		}
		l := w.Client.Latency
		row(w.Round, w.Lib, w.Run.Published, ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max),
			fmt.Sprintf("%.1f", w.HeapStackKB), fmt.Sprintf("%.1f", w.RSSKB), fmt.Sprintf("%.2f", w.Goroutines),
			missing(w.Run, w.Client), w.Client.Gaps, w.Client.Disorder,
			pct(w.Run.CPU, w.Run.Elapsed), idle(w.Machine), note(w.Run, w.Client, w.Machine))
	}
	tw.Flush()
	fmt.Fprintln(out)
	row("round", "esource/plain p50", "p99", "max", "heap+stack/conn", "RSS/conn")
	ratio := func(a, b float64) string {
		if b <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", a/b)
	}
	for round := 1; round <= o.wide.runs; round++ {
		var es, pl *wideRun
		for i := range runs {
			switch w := &runs[i]; {
			case w.Round != round || w.Error != "":
			case w.Lib == "esource":
				es = w
			case w.Lib == "plain":
				pl = w
			}
		}
		if es == nil || pl == nil {
			continue
		}
		e, p := es.Client.Latency, pl.Client.Latency
		row(round, ratio(float64(e.P50), float64(p.P50)), ratio(float64(e.P99), float64(p.P99)), ratio(float64(e.Max), float64(p.Max)),
			ratio(es.HeapStackKB, pl.HeapStackKB), ratio(es.RSSKB, pl.RSSKB))
	}
	tw.Flush()
}
