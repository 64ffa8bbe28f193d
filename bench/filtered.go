// This file holds scenario F, filtered fan-out on Kafka: the closed loop of
// scenario K with the topic's messages keyed k0 to k{N-1} (key kJ on
// partition J mod the partitions; -filter-keys, 10), run with unfiltered
// clients, then with clients that each ask for one key (?key=k{i%N}) and
// so receive a tenth of the messages, in pairs of runs in the same
// invocation, each through a fresh bridge and client process. The bridge
// matches each message once per distinct filter (esource's pass sets), not
// once per client.

package main

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"
)

// filterOptions are the flags of scenario F.
type filterOptions struct {
	keys     int
	runs     int
	duration time.Duration
	window   int
}

func filterFlags(f *filterOptions) {
	flag.IntVar(&f.keys, "filter-keys", 10, "keys of scenario F's messages, and distinct filters of its filtered clients")
	flag.IntVar(&f.runs, "filter-runs", 3, "pairs of runs (unfiltered, filtered) of scenario F")
	flag.DurationVar(&f.duration, "filter-duration", 10*time.Second, "producing time of each run of scenario F (closed loop, -filter-window)")
	// Each message in flight is 1/keys of the deliveries in a filtered
	// run: with K's window of 4,096 the filtered run was bound by the
	// loop's latency (more window, more deliveries/s) while the unfiltered
	// run was not. From 8,192 on, neither grows with the window.
	flag.IntVar(&f.window, "filter-window", 16384, "closed-loop window of scenario F: messages in flight beyond the slowest client")
}

// filterRun is one closed-loop run of scenario F.
type filterRun struct {
	Pair           int          `json:"pair"`
	Filtered       bool         `json:"filtered"`
	Error          string       `json:"error,omitempty"`
	Run            runResult    `json:"run"`
	Client         clientReport `json:"client"`
	DeliveriesPerS float64      `json:"deliveriesPerSecond"` // messages received per second, summed over the clients
	MessagesPerS   float64      `json:"messagesPerSecond"`   // produced and delivered to every client it is for
	Machine        machineCPU   `json:"machine"`
}

// filterPair is a pair of runs and the ratios of the filtered run's
// figures to the unfiltered run's.
type filterPair struct {
	Unfiltered, Filtered filterRun
	DeliveriesRatio      float64 `json:"deliveriesRatio"`
	MessagesRatio        float64 `json:"messagesRatio"`
}

// filterRes is the result of scenario F.
type filterRes struct {
	Error string       `json:"error,omitempty"`
	Pairs []filterPair `json:"pairs"`
}

// filterScenario runs scenario F on a fresh topic: o.filter.runs pairs,
// the unfiltered run first in odd pairs and second in even ones.
func (o options) filterScenario() *filterRes {
	b := kafkaBroker{o.kafka}
	res := &filterRes{}
	name, err := b.create("f")
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer b.remove(name)
	for i := range o.filter.runs {
		var p filterPair
		for _, filtered := range []bool{i%2 == 1, i%2 == 0} {
			o.logf("F: pair %d: filtered %v", i+1, filtered)
			r := o.filterRun(b, name, i+1, filtered)
			if filtered {
				p.Filtered = r
			} else {
				p.Unfiltered = r
			}
		}
		if p.Unfiltered.DeliveriesPerS > 0 && p.Filtered.Error == "" {
			p.DeliveriesRatio = p.Filtered.DeliveriesPerS / p.Unfiltered.DeliveriesPerS
			p.MessagesRatio = p.Filtered.MessagesPerS / p.Unfiltered.MessagesPerS
		}
		res.Pairs = append(res.Pairs, p)
	}
	return res
}

// filterRun runs the closed loop once through a fresh bridge and client
// process: o.clients clients, unfiltered or each with one key's filter.
func (o options) filterRun(b broker, name string, pair int, filtered bool) (f filterRun) {
	f.Pair, f.Filtered = pair, filtered
	mode := "unfiltered"
	if filtered {
		mode = "filtered"
	}
	s, err := o.open(b.lib(), append(routeArgs(b, name, false), "-route-keys="+strconv.Itoa(o.filter.keys))...)
	if err != nil {
		f.Error = err.Error()
		return f
	}
	defer s.close()
	if _, err := s.connect(o.clients, command{Broker: true, BufSize: 64 << 10, Progress: s.addr.Progress,
		Keys: o.filter.keys, Filter: filtered}); err != nil {
		f.Error = err.Error()
		return f
	}
	cmd := command{Cmd: "closed", Duration: o.filter.duration, Window: o.filter.window, Size: o.size,
		StallTimeout: o.stallTimeout, CPUProfile: o.profile("F", mode+strconv.Itoa(pair), "cpu")}
	machine := cpuMeter()
	if err := s.srv.call(cmd, &f.Run, cmd.Duration+o.stallTimeout+time.Minute); err != nil {
		f.Error = err.Error()
		return f
	}
	f.Machine = machine()
	if err := s.cli.call(command{Cmd: "report", Published: f.Run.Published}, &f.Client, time.Minute); err != nil {
		f.Error = err.Error()
		return f
	}
	if !filtered {
		f.Client.Missing = missing(f.Run, f.Client)
	}
	if sec := f.Run.Elapsed.Seconds(); sec > 0 {
		f.DeliveriesPerS = float64(f.Client.Events) / sec
		f.MessagesPerS = float64(f.Run.Delivered) / sec
	}
	return f
}

// printFilter writes scenario F's table.
func printFilter(out io.Writer, o options, r *filterRes) {
	fmt.Fprintf(out, "\nF. Filtered fan-out: Kafka to %d SSE clients, one bridge route on a %d-partition topic, %d-byte messages keyed k0..k%d, closed loop (window %d) for %v; unfiltered clients, then clients asking for ?key=k{i%%%d} (%d distinct filters, each passing 1/%d)\n",
		o.clients, o.kafka.partitions, o.size, o.filter.keys-1, o.filter.window, o.filter.duration, o.filter.keys, o.filter.keys, o.filter.keys)
	if r.Error != "" {
		fmt.Fprintf(out, "error: %s\n", r.Error)
		return
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(cells ...any) {
		for _, c := range cells {
			fmt.Fprint(tw, c, "\t")
		}
		fmt.Fprintln(tw)
	}
	row("pair", "clients", "produced", "elapsed", "messages/s", "deliveries/s", "missing", "mismatches", "duplicates", "gaps", "server CPU", "client CPU", "idle CPU", "note")
	for _, p := range r.Pairs {
		for _, f := range []filterRun{p.Unfiltered, p.Filtered} {
			mode := "unfiltered"
			if f.Filtered {
				mode = "filtered"
			}
			if f.Error != "" {
				row(f.Pair, mode, "", "", "", "", "", "", "", "", "", "", "", "error: "+f.Error)
				continue
			}
			row(f.Pair, mode, f.Run.Published, f.Run.Elapsed.Round(time.Millisecond), fmt.Sprintf("%.0f", f.MessagesPerS),
				fmt.Sprintf("%.0f", f.DeliveriesPerS), f.Client.Missing, f.Client.Mismatches, f.Client.Duplicates, f.Client.Gaps,
				pct(f.Run.CPU, f.Run.Elapsed), pct(f.Client.CPU, f.Run.Elapsed), idle(f.Machine), note(f.Run, f.Client, f.Machine))
		}
	}
	tw.Flush()
	fmt.Fprintln(out, "filtered / unfiltered of the same pair: deliveries/s (messages received per second, summed over the clients; the target is 0.5x), and messages/s (produced and delivered to every client they are for)")
	for _, p := range r.Pairs {
		if p.DeliveriesRatio > 0 {
			fmt.Fprintf(out, "  pair %d: deliveries/s %.2fx, messages/s %.2fx\n", p.Unfiltered.Pair, p.DeliveriesRatio, p.MessagesRatio)
		}
	}
}
