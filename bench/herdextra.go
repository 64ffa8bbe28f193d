// The extra measurements of scenario H (-herd-extra), on JetStream (a
// nats-server embedded in the orchestrator), each against a fresh esbridge
// process (-role=herd-server):
//
//	a  a live client's produce-to-receive latency (-herd-rate messages/s)
//	   for a window without, then a window with, 5 clients that send a
//	   900 KB Last-Event-ID over and over (each reads the first event,
//	   hangs up, and again); then a window with the same loop sending a
//	   101-byte malformed ID, the control.
//	b  1,000 resume-and-hang-up cycles (20 at a time): connect with the ID
//	   of the stream's first message (far outside the log, so the resume
//	   needs a catch-up reader), hang up 0 to 50 ms later; then how long
//	   until the stream's consumer count is back to 1 (the live reader).
//	c  30 clients that never read (their own receive buffers at the
//	   kernel's defaults) resume from the start (start=earliest, no ID) of
//	   a stream of 64 KB messages while 20 more a second are produced: the
//	   bridge's peak memory, whether a live client keeps receiving, and
//	   the bridge's log (a NATS slow consumer would show there as a
//	   warning of conn=live).

package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"
	"unsafe"
)

type herdExtra struct {
	Error   string           `json:"error,omitempty"`
	Headers *extraHeaders    `json:"headers,omitempty"`
	Hangups *extraHangups    `json:"hangups,omitempty"`
	Stalled *extraNonReaders `json:"nonReaders,omitempty"`
}

type extraHeaders struct {
	Error       string        `json:"error,omitempty"`
	Window      time.Duration `json:"window"`
	BaseN       int           `json:"baseN"`
	BaseP50     time.Duration `json:"baseP50"`
	BaseP99     time.Duration `json:"baseP99"`
	WithN       int           `json:"withN"`
	WithP50     time.Duration `json:"withP50"`
	WithP99     time.Duration `json:"withP99"`
	SmallN      int           `json:"smallN"` // the control: 5 clients looping with a 101-byte malformed ID
	SmallP50    time.Duration `json:"smallP50"`
	SmallP99    time.Duration `json:"smallP99"`
	SmallCycles int64         `json:"smallCycles"`
	Cycles      int64         `json:"cycles"`
	CycleErrs   int64         `json:"cycleErrors"`
	FirstErr    string        `json:"firstError,omitempty"`
	Reply       string        `json:"reply,omitempty"` // the first event the big-ID clients got
	CPU         time.Duration `json:"serverCPU"`       // the bridge's, during the window with
	CPUBase     time.Duration `json:"serverCPUBase"`   // and without
	HWM         uint64        `json:"vmHWM"`
	Warnings    int           `json:"warnings"`
	WarningText string        `json:"warningText,omitempty"`
}

type extraHangups struct {
	Error       string        `json:"error,omitempty"`
	Cycles      int64         `json:"cycles"`
	DialErrs    int64         `json:"dialErrors"`
	Elapsed     time.Duration `json:"elapsed"`
	Before      int           `json:"consumersBefore"`
	Max         int           `json:"consumersMax"`
	AtEnd       int           `json:"consumersAtEnd"`
	BackToOne   time.Duration `json:"backToOne"` // -1: not within the bound
	Final       int           `json:"consumersFinal"`
	BridgeMax   int           `json:"bridgeReadersMax"` // counted in the bridge process
	BridgeOpens int           `json:"bridgeReaderOpens"`
	BridgeOpen  int           `json:"bridgeReadersAfter"`
	LiveEvents  uint64        `json:"liveEvents"` // received by a live client during the cycles
	LiveGaps    uint64        `json:"liveGaps"`
	HWM         uint64        `json:"vmHWM"`
	Warnings    int           `json:"warnings"`
	WarningText string        `json:"warningText,omitempty"`
}

type extraNonReaders struct {
	Error       string        `json:"error,omitempty"`
	Clients     int           `json:"clients"`
	Messages    int           `json:"messages"` // before the clients came
	Size        int           `json:"size"`
	Duration    time.Duration `json:"duration"`
	RSSBefore   uint64        `json:"rssBefore"`
	HWM         uint64        `json:"vmHWM"`
	MaxRSS      uint64        `json:"maxRSS"` // sampled during the window
	Consumers   int           `json:"consumersMax"`
	Produced    uint64        `json:"produced"` // during the window
	LiveEvents  uint64        `json:"liveEvents"`
	LiveLast    uint64        `json:"liveLast"` // last index the live client had
	Head        uint64        `json:"head"`
	LiveP50     time.Duration `json:"liveP50"`
	LiveP99     time.Duration `json:"liveP99"`
	LiveMax     time.Duration `json:"liveMax"`
	LiveGaps    uint64        `json:"liveGaps"`
	LiveErr     string        `json:"liveError,omitempty"`
	Sent        []int64       `json:"sentToNonReaders,omitempty"` // bytes the kernel took for each, min and max
	Warnings    int           `json:"warnings"`
	LiveWarns   int           `json:"liveConnWarnings"`
	WarningText string        `json:"warningText,omitempty"`
}

// herdExtras runs the extra measurements of -herd-extra.
func (o options) herdExtras(dir string) *herdExtra {
	x := &herdExtra{}
	js, err := newJSBroker()
	if err != nil {
		x.Error = err.Error()
		return x
	}
	defer js.close()
	if strings.ContainsAny(o.herd.extra, "ab") {
		o.logf("H: extras a, b")
		x.Headers, x.Hangups = o.extraAB(js, dir)
	}
	if strings.Contains(o.herd.extra, "c") {
		o.logf("H: extra c")
		x.Stalled = o.extraC(js, dir)
	}
	return x
}

// extraWindow is the length of each measuring window of the extras.
func (o options) extraWindow() time.Duration {
	if o.herd.clients < 1000 { // -quick
		return 5 * time.Second
	}
	return 10 * time.Second
}

func (o options) extraAB(js *jsBroker, dir string) (a *extraHeaders, b *extraHangups) {
	doA, doB := strings.Contains(o.herd.extra, "a"), strings.Contains(o.herd.extra, "b")
	if doA {
		a = &extraHeaders{}
	}
	if doB {
		b = &extraHangups{}
	}
	fail := func(err error) (*extraHeaders, *extraHangups) {
		if a != nil {
			a.Error = err.Error()
		}
		if b != nil {
			b.Error = err.Error()
		}
		return a, b
	}
	stream, err := js.create()
	if err != nil {
		return fail(err)
	}
	defer js.remove(stream)
	sender, _ := js.producer(stream)
	feed := newHerdFeed(sender, 1, o.herd.size)
	if err := feed.prefill(2000); err != nil {
		return fail(err)
	}
	feed.live(o.herd.rate, 5*time.Minute)
	defer feed.stop()
	base, q := js.url(stream)
	first, err := o.startESBridge(dir, "extra-ab-probe", base+q+"start=earliest")
	if err != nil {
		return fail(err)
	}
	recs, _, err := probe(first.addr, 1, 1, 0, time.Minute)
	first.stop()
	if err != nil {
		return fail(err)
	}
	oldID := recs[0].id
	esb, err := o.startESBridge(dir, "extra-ab", base)
	if err != nil {
		return fail(err)
	}
	defer esb.kill()
	watch := startLiveWatch(esb.addr, "/events", 64<<10)
	defer watch.stop()
	time.Sleep(time.Second)
	win := o.extraWindow()

	if doA {
		a.Window = win
		var cpu0, cpu1, cpu2 time.Duration
		watch.window()
		_ = esb.call(command{Cmd: "prof"}, &cpu0, 10*time.Second)
		time.Sleep(win)
		baseLat := watch.window()
		withProf := command{Cmd: "prof"}
		if o.profileDir != "" {
			withProf.On, withProf.CPUProfile = true, filepath.Join(dir, "extra-a-with.cpu.pprof")
		}
		_ = esb.call(withProf, &cpu1, 10*time.Second)
		big := "Last-Event-ID: " + strings.Repeat("A", 900<<10)
		a.Cycles, a.CycleErrs, a.FirstErr, a.Reply = hammer(esb.addr, big, win)
		withLat := watch.window()
		_ = esb.call(command{Cmd: "prof"}, &cpu2, 10*time.Second)
		a.CPUBase, a.CPU = cpu1-cpu0, cpu2-cpu1
		a.BaseN, a.WithN = len(baseLat), len(withLat)
		a.BaseP50, a.BaseP99 = herdPercentile(baseLat, 0.5), herdPercentile(baseLat, 0.99)
		a.WithP50, a.WithP99 = herdPercentile(withLat, 0.5), herdPercentile(withLat, 0.99)
		// The control: the same loop with a short malformed ID.
		small := "Last-Event-ID: " + strings.Repeat("A", 100) + "!"
		a.SmallCycles, _, _, _ = hammer(esb.addr, small, win)
		smallLat := watch.window()
		a.SmallN = len(smallLat)
		a.SmallP50, a.SmallP99 = herdPercentile(smallLat, 0.5), herdPercentile(smallLat, 0.99)
		a.HWM = procStatus(esb.pid(), "VmHWM")
	}

	if doB {
		smp := startSampler(js, stream, esb.pid())
		defer smp.end()
		time.Sleep(300 * time.Millisecond)
		b.Before = smp.current()
		smp.reset()
		var rc readerCount
		_ = esb.call(command{Cmd: "readers", On: true}, &rc, 10*time.Second)
		events0 := watch.events.Load()
		req := fmt.Sprintf("GET /events HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nLast-Event-ID: %s\r\n\r\n", esb.addr, oldID)
		var next, dialErrs atomic.Int64
		start := time.Now()
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				for next.Add(1) <= 1000 && time.Since(start) < time.Minute {
					nc, err := net.DialTimeout("tcp", esb.addr, 5*time.Second)
					if err != nil {
						dialErrs.Add(1)
						continue
					}
					_, _ = io.WriteString(nc, req)
					time.Sleep(time.Duration(rand.Int64N(int64(50 * time.Millisecond))))
					nc.Close()
				}
			})
		}
		wg.Wait()
		b.Elapsed = time.Since(start)
		b.Cycles = min(next.Load(), 1000+20) - 20
		b.Cycles = min(1000, b.Cycles)
		b.DialErrs = dialErrs.Load()
		end := time.Now()
		b.AtEnd = smp.current()
		b.BackToOne = -1
		for time.Since(end) < 15*time.Second {
			// Wait for a fresh sample.
			time.Sleep(100 * time.Millisecond)
			if smp.current() <= 1 {
				b.BackToOne = time.Since(end)
				break
			}
		}
		smp.mu.Lock()
		b.Max = smp.max
		smp.mu.Unlock()
		b.Final = smp.current()
		if err := esb.call(command{Cmd: "readers"}, &rc, 10*time.Second); err == nil {
			b.BridgeMax, b.BridgeOpens, b.BridgeOpen = rc.Max, rc.Opens, rc.Open
		}
		b.LiveEvents = watch.events.Load() - events0
		watch.mu.Lock()
		b.LiveGaps = watch.gaps
		watch.mu.Unlock()
		b.HWM = procStatus(esb.pid(), "VmHWM")
	}
	n, text := logWarnings(esb.log)
	if a != nil {
		a.Warnings, a.WarningText = n, text
	}
	if b != nil {
		b.Warnings, b.WarningText = n, text
	}
	return a, b
}

func (o options) extraC(js *jsBroker, dir string) (c *extraNonReaders) {
	c = &extraNonReaders{Clients: 30, Size: 64 << 10, Messages: 1000, Duration: 2 * o.extraWindow()}
	if o.herd.clients < 1000 {
		c.Messages = 300
	}
	fail := func(err error) *extraNonReaders {
		c.Error = err.Error()
		return c
	}
	stream, err := js.create()
	if err != nil {
		return fail(err)
	}
	defer js.remove(stream)
	sender, _ := js.producer(stream)
	feed := newHerdFeed(sender, 1, c.Size)
	base, q := js.url(stream)
	esb, err := o.startESBridge(dir, "extra-c", base+q+"start=earliest")
	if err != nil {
		return fail(err)
	}
	defer esb.kill()
	watch := startLiveWatch(esb.addr, "/events", 512<<10)
	defer watch.stop()
	time.Sleep(time.Second)
	for range c.Messages / 100 {
		if err := feed.produce(100); err != nil {
			return fail(err)
		}
	}
	feed.live(20, 5*time.Minute)
	defer feed.stop()
	time.Sleep(time.Second)
	c.RSSBefore = procStatus(esb.pid(), "VmRSS")
	smp := startSampler(js, stream, esb.pid())
	defer smp.end()
	// The non-reading clients.
	req := fmt.Sprintf("GET /events HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", esb.addr)
	var conns []*net.TCPConn
	for range c.Clients {
		nc, err := net.DialTimeout("tcp", esb.addr, 5*time.Second)
		if err != nil {
			return fail(err)
		}
		conns = append(conns, nc.(*net.TCPConn))
		if _, err := io.WriteString(nc, req); err != nil {
			return fail(err)
		}
	}
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	head0, ev0 := feed.head.Load(), watch.events.Load()
	watch.window()
	time.Sleep(c.Duration)
	lat := watch.window()
	c.Produced = feed.head.Load() - head0
	c.LiveEvents = watch.events.Load() - ev0
	c.Head = feed.head.Load()
	watch.mu.Lock()
	c.LiveLast, c.LiveGaps = watch.last, watch.gaps
	if watch.err != nil {
		c.LiveErr = watch.err.Error()
	}
	watch.mu.Unlock()
	c.LiveP50, c.LiveP99, c.LiveMax = herdPercentile(lat, 0.5), herdPercentile(lat, 0.99), herdPercentile(lat, 1)
	c.HWM = procStatus(esb.pid(), "VmHWM")
	smp.mu.Lock()
	c.MaxRSS, c.Consumers = smp.maxRSS, smp.max
	smp.mu.Unlock()
	// What the kernel took for each non-reading client: its receive queue.
	lo, hi := int64(-1), int64(0)
	for _, nc := range conns {
		f, err := nc.File()
		if err != nil {
			continue
		}
		n := rcvQueue(f)
		f.Close()
		if lo < 0 || n < lo {
			lo = n
		}
		hi = max(hi, n)
	}
	c.Sent = []int64{lo, hi}
	c.Warnings, c.WarningText = logWarnings(esb.log)
	if b, err := os.ReadFile(esb.log); err == nil {
		for line := range strings.Lines(string(b)) {
			if strings.Contains(line, "level=WARN") && strings.Contains(line, "conn=live") {
				c.LiveWarns++
			}
		}
	}
	return c
}

// printHerdExtra writes the extra measurements.
func printHerdExtra(out io.Writer, x *herdExtra) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(out)
	if x.Error != "" {
		fmt.Fprintln(out, "H extras: error:", x.Error)
		return
	}
	if a := x.Headers; a != nil {
		fmt.Fprintf(out, "H(a). A live client's latency (produce to receive), %v without, then %v with 5 clients sending 900 KB Last-Event-IDs over and over (JetStream)\n", a.Window, a.Window)
		if a.Error != "" {
			fmt.Fprintln(out, "   error:", a.Error)
		} else {
			ratio := 0.0
			if a.BaseP99 > 0 {
				ratio = float64(a.WithP99) / float64(a.BaseP99)
			}
			fmt.Fprintf(tw, "   without\tp50 %s\tp99 %s\t(%d messages)\tbridge CPU %.0f%%\n", ms(a.BaseP50), ms(a.BaseP99), a.BaseN, 100*a.CPUBase.Seconds()/a.Window.Seconds())
			fmt.Fprintf(tw, "   with\tp50 %s\tp99 %s\t(%d messages)\tbridge CPU %.0f%%\n", ms(a.WithP50), ms(a.WithP99), a.WithN, 100*a.CPU.Seconds()/a.Window.Seconds())
			fmt.Fprintf(tw, "   control: 5 clients looping with a 101-byte malformed ID\tp50 %s\tp99 %s\t(%d messages)\t%d requests\n", ms(a.SmallP50), ms(a.SmallP99), a.SmallN, a.SmallCycles)
			tw.Flush()
			fmt.Fprintf(out, "   p99 with/without: %.2fx (target ≤ 2x); %d big-ID requests answered (%d failed%s); they got: %s; VmHWM %d MB; log: %d warnings %s\n",
				ratio, a.Cycles, a.CycleErrs, firstErr(a.FirstErr), a.Reply, a.HWM>>20, a.Warnings, a.WarningText)
		}
	}
	if b := x.Hangups; b != nil {
		fmt.Fprintln(out, "H(b). 1,000 resume-and-hang-up cycles on JetStream (ID of the first message, hang up after 0-50 ms, 20 at a time)")
		if b.Error != "" {
			fmt.Fprintln(out, "   error:", b.Error)
		} else {
			back := "NOT within 15s"
			if b.BackToOne >= 0 {
				back = secs(b.BackToOne)
			}
			fmt.Fprintf(out, "   %d cycles in %s (%d dial errors); stream consumers: %d before, max %d during, %d at the end of the cycles, back to 1 after %s (now %d); readers in the bridge: max %d, %d opened, %d open after; live client got %d events meanwhile, %d gaps; VmHWM %d MB; log: %d warnings %s\n",
				b.Cycles, secs(b.Elapsed), b.DialErrs, b.Before, b.Max, b.AtEnd, back, b.Final, b.BridgeMax, b.BridgeOpens, b.BridgeOpen, b.LiveEvents, b.LiveGaps, b.HWM>>20, b.Warnings, b.WarningText)
		}
	}
	if c := x.Stalled; c != nil {
		fmt.Fprintf(out, "H(c). %d clients that never read resume from the start of %d × %d KB messages (JetStream) for %v, 20 more/s produced\n", c.Clients, c.Messages, c.Size>>10, c.Duration)
		if c.Error != "" {
			fmt.Fprintln(out, "   error:", c.Error)
		} else {
			fmt.Fprintf(out, "   bridge RSS before %d MB, max sampled %d MB, VmHWM %d MB; stream consumers max %d; kernel-queued bytes per non-reader %v\n",
				c.RSSBefore>>20, c.MaxRSS>>20, c.HWM>>20, c.Consumers, c.Sent)
			fmt.Fprintf(out, "   live client: %d of %d messages produced in the window (last index %d, head %d), latency p50 %s p99 %s max %s, %d gaps%s\n",
				c.LiveEvents, c.Produced, c.LiveLast, c.Head, ms(c.LiveP50), ms(c.LiveP99), ms(c.LiveMax), c.LiveGaps, firstErr(c.LiveErr))
			fmt.Fprintf(out, "   log: %d warnings (%d on the live connection) %s\n", c.Warnings, c.LiveWarns, c.WarningText)
		}
	}
}

func firstErr(s string) string {
	if s == "" {
		return ""
	}
	return ", first: " + s
}

// rcvQueue returns the bytes waiting in a socket's receive queue
// (FIONREAD).
func rcvQueue(f *os.File) int64 {
	var n int32
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), 0x541B, uintptr(unsafe.Pointer(&n)))
	if errno != 0 {
		return -1
	}
	return int64(n)
}

// hammer has 5 clients request the route at addr with the header line h,
// each reading the first event and hanging up, over and over, for d.
func hammer(addr, h string, d time.Duration) (cycles, errs int64, firstErr, reply string) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range 5 {
		wg.Go(func() {
			for ctx.Err() == nil {
				var first string
				cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
				err := readSSE(cctx, addr, "/events", []string{h}, 64<<10, nil, func(ev *sseEvent) bool {
					first = fmt.Sprintf("event %q: %s", ev.typ, ev.data)
					return false
				})
				ccancel()
				if ctx.Err() != nil {
					return
				}
				mu.Lock()
				if err != nil {
					errs++
					if firstErr == "" {
						firstErr = err.Error()
					}
				} else {
					cycles++
					if reply == "" {
						reply = first
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return cycles, errs, firstErr, reply
}
