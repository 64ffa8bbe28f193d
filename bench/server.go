// This file is the server process (-role=server): it serves one library's
// stream over 127.0.0.1, runs the publishers, and measures its own memory
// and CPU. Clients report their progress to it over a plain TCP side
// channel (8-byte big-endian counts), which drives the closed-loop
// publisher and detects stalls.

package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// progress is the number of events that every (reading) client has
// received, as last reported by the client process.
type progress struct {
	mu   sync.Mutex
	val  uint64
	at   time.Time     // when val was last raised
	wake chan struct{} // closed and replaced when val is raised
}

func newProgress() *progress {
	return &progress{at: time.Now(), wake: make(chan struct{})}
}

func (p *progress) get() (val uint64, at time.Time, wake <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.val, p.at, p.wake
}

func (p *progress) set(v uint64) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if v <= p.val {
		return
	}
	p.val, p.at = v, now
	close(p.wake)
	p.wake = make(chan struct{})
}

// serve accepts progress connections on ln; each sends counts.
func (p *progress) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var b [8]byte
			for {
				if _, err := io.ReadFull(c, b[:]); err != nil {
					return
				}
				p.set(binary.BigEndian.Uint64(b[:]))
			}
		}()
	}
}

// serverProc is the state of the server process.
type serverProc struct {
	srv  server
	prog *progress

	warmMu   sync.Mutex
	warmStop chan struct{}
	warmDone chan struct{}

	// sent is the number of events that earlier runs published: a run
	// continues their numbering, so that the clients' counts go on.
	sent uint64
}

// runResult is the reply to "closed" and "paced".
type runResult struct {
	Published   uint64        `json:"published"`   // events published
	Delivered   uint64        `json:"delivered"`   // events every client received
	Elapsed     time.Duration `json:"elapsed"`     // first publish to last delivery
	PublishTime time.Duration `json:"publishTime"` // first to last publish
	Stalled     bool          `json:"stalled"`     // no progress for StallTimeout
	CPU         time.Duration `json:"cpu"`         // server process CPU time (user+sys)
}

// memResult is the reply to "mem".
type memResult struct {
	HeapInuse  uint64 `json:"heapInuse"`
	StackInuse uint64 `json:"stackInuse"`
	Sys        uint64 `json:"sys"`
	RSS        uint64 `json:"rss"`
	Goroutines int    `json:"goroutines"`
}

func runServer(lib string, cfg serverConfig) error {
	srv, err := newServer(lib, cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/events", srv)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	if cfg.tls {
		if hs.TLSConfig, err = serverTLS(); err != nil {
			return err
		}
		go func() { _ = hs.ServeTLS(ln, "", "") }()
	} else {
		go func() { _ = hs.Serve(ln) }()
	}
	s := &serverProc{srv: srv, prog: newProgress()}
	go s.prog.serve(pln)

	r := replier{enc: json.NewEncoder(os.Stdout)}
	r.reply(hello{HTTP: ln.Addr().String(), Progress: pln.Addr().String()})
	for c := range commands {
		switch c.Cmd {
		case "warm":
			s.warm(c.On)
			r.reply(struct{}{})
		case "closed", "paced":
			res, err := s.run(c)
			if err != nil {
				r.fail(err)
				continue
			}
			r.reply(res)
		case "mem":
			res, err := measureMem(c.HeapProfile)
			if err != nil {
				r.fail(err)
				continue
			}
			r.reply(res)
		case "prof":
			r.reply(s.prof(c))
		default:
			r.fail(fmt.Errorf("unknown command %q", c.Cmd))
		}
	}
	srv.close()
	return nil
}

// warm starts or stops publishing warm-up events (ID "w"); clients wait
// for one to know that they are subscribed. It waits 50 ms after each, or
// four times as long as the last Publish call took if that is longer: a
// library that fans out synchronously (go-sse's Joe) admits new
// subscribers only between events, and with 10,000 of them each warm-up
// event takes a while. Stopping returns once the warm-up publisher is done.
func (s *serverProc) warm(on bool) {
	s.warmMu.Lock()
	defer s.warmMu.Unlock()
	if s.warmStop != nil {
		close(s.warmStop)
		<-s.warmDone
		s.warmStop, s.warmDone = nil, nil
	}
	if !on {
		return
	}
	stop, done := make(chan struct{}), make(chan struct{})
	s.warmStop, s.warmDone = stop, done
	go func() {
		defer close(done)
		for {
			t0 := time.Now()
			s.srv.publish("w", []byte("w"))
			pause := max(50*time.Millisecond, 4*time.Since(t0))
			select {
			case <-stop:
				return
			case <-time.After(pause):
			}
		}
	}()
}

// run publishes events 1, 2, ... (after those of earlier runs) for
// c.Duration (or, in "closed", until c.MaxEvents if that comes first), then
// waits until every client has received them all, or until progress stops
// for c.StallTimeout.
//
// "closed" publishes event i only once every client has received event
// i-c.Window, as fast as that allows. "paced" publishes c.Rate events per
// second on a fixed schedule, whatever the clients do.
//
// Each event's data is its publish time (Unix nanoseconds, 19 digits),
// padded with 'x' to c.Size bytes.
func (s *serverProc) run(c command) (runResult, error) {
	if c.CPUProfile != "" {
		f, err := os.Create(c.CPUProfile)
		if err != nil {
			return runResult{}, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return runResult{}, err
		}
		defer pprof.StopCPUProfile()
	}
	cpu0 := cpuTime()
	var (
		mu        sync.Mutex
		published uint64
		lastPub   time.Time
	)
	pubDone := make(chan struct{})
	stop := make(chan struct{})
	base := s.sent
	defer func() {
		close(stop)
		// A publish that blocks for good (scenario D's stalled libraries)
		// is left behind: such a session is not used again.
		select {
		case <-pubDone:
		case <-time.After(time.Second):
		}
		mu.Lock()
		s.sent = base + published
		mu.Unlock()
	}()
	start := time.Now()
	go func() {
		defer close(pubDone)
		end := start.Add(c.Duration)
		var interval time.Duration
		if c.Cmd == "paced" {
			interval = time.Second / time.Duration(c.Rate)
		}
		for seq := base + 1; ; seq++ {
			now := time.Now()
			if c.Cmd == "paced" {
				at := start.Add(time.Duration(seq-base-1) * interval)
				if !at.Before(end) || !now.Before(end) {
					return // a library that cannot keep up publishes fewer
				}
				if d := at.Sub(now); d > 0 {
					select {
					case <-time.After(d):
					case <-stop:
						return
					}
				}
			} else {
				if !now.Before(end) || c.MaxEvents > 0 && seq-base > c.MaxEvents {
					return
				}
				for {
					got, _, wake := s.prog.get()
					if seq <= got+uint64(c.Window) {
						break
					}
					select {
					case <-wake:
					case <-stop:
						return
					}
				}
			}
			s.srv.publish(strconv.FormatUint(seq, 10), payload(c.Size, time.Now()))
			now = time.Now()
			mu.Lock()
			published, lastPub = seq-base, now
			mu.Unlock()
		}
	}()

	// Watch the progress until every event is delivered or it stalls.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var res runResult
	lastVal, lastChange := uint64(0), time.Now()
	for {
		got, at, wake := s.prog.get()
		got = max(got, base) - base
		if got != lastVal {
			lastVal, lastChange = got, time.Now()
		}
		mu.Lock()
		pub, pubAt := published, lastPub
		mu.Unlock()
		select {
		case <-pubDone:
			if got >= pub {
				res.Elapsed = at.Sub(start)
				if pub == 0 {
					res.Elapsed = 0
				}
				res.Published, res.Delivered = pub, got
				res.PublishTime = pubAt.Sub(start)
				res.CPU = cpuTime() - cpu0
				return res, nil
			}
		default:
		}
		if time.Since(lastChange) > c.StallTimeout {
			res.Published, res.Delivered, res.Stalled = pub, got, true
			res.Elapsed = time.Since(start)
			res.PublishTime = pubAt.Sub(start)
			res.CPU = cpuTime() - cpu0
			return res, nil
		}
		select {
		case <-wake:
		case <-pubDone:
		case <-tick.C:
		}
	}
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

// payload returns size bytes: the time t in Unix nanoseconds, then 'x's.
func payload(size int, t time.Time) []byte {
	b := make([]byte, 0, max(size, 20))
	b = strconv.AppendInt(b, t.UnixNano(), 10)
	for len(b) < size {
		b = append(b, 'x')
	}
	return b
}

// measureMem collects garbage and returns the memory in use; it writes a
// heap profile to heapProfile if set.
func measureMem(heapProfile string) (memResult, error) {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, err := vmRSS()
	if err != nil {
		return memResult{}, err
	}
	if heapProfile != "" {
		f, err := os.Create(heapProfile)
		if err != nil {
			return memResult{}, err
		}
		defer f.Close()
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			return memResult{}, err
		}
	}
	return memResult{
		HeapInuse:  ms.HeapInuse,
		StackInuse: ms.StackInuse,
		Sys:        ms.Sys,
		RSS:        rss,
		Goroutines: runtime.NumGoroutine(),
	}, nil
}

// vmRSS returns the resident set size of this process, from /proc.
func vmRSS() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/self/status")
}

// cpuTime returns the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
