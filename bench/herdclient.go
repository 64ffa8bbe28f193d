// This file is the client process of scenario H (-role=herd-client; see
// herd.go) and the SSE reader that the herd's probe and its extra
// measurements share with it.
//
// Each herd client resumes with a Last-Event-ID and checks the bench's
// herd payloads ("TS I P K x…": produce time, global index, partition,
// sequence number within the partition) as it receives them: in each
// partition, K must follow the last one received by exactly one, from the
// client's resume point on. A K already passed counts as a duplicate, a K
// beyond the next one counts the ones jumped over as skipped.

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// sseEvent is one event as received: its fields, not copied (valid only
// during the callback).
type sseEvent struct {
	id, typ, data []byte
	hasID         bool
}

// readSSE connects to addr, sends a GET of path with the extra header
// lines (each "Name: value"), and calls onEvent for every event until it
// returns false, the stream fails, or ctx ends. It returns nil when
// onEvent stopped it. onOpen, if set, is called with the connection once
// the response headers are in.
func readSSE(ctx context.Context, addr, path string, header []string, bufSize int, onOpen func(net.Conn), onEvent func(*sseEvent) bool) error {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n", path, addr)
	for _, h := range header {
		req.WriteString(h)
		req.WriteString("\r\n")
	}
	req.WriteString("\r\n")
	if _, err := io.WriteString(nc, req.String()); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(nc, bufSize), nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	if onOpen != nil {
		onOpen(nc)
	}
	buf := make([]byte, bufSize)
	n := 0
	var ev sseEvent
	for {
		m, err := resp.Body.Read(buf[n:])
		n += m
		b := buf[:n]
		for {
			i := bytes.Index(b, eventEnd)
			if i < 0 {
				break
			}
			block := b[:i+1]
			b = b[i+2:]
			ev = sseEvent{}
			for len(block) > 0 {
				j := bytes.IndexByte(block, '\n')
				line := block[:j]
				block = block[j+1:]
				name, value, _ := bytes.Cut(line, []byte(":"))
				value = bytes.TrimPrefix(value, []byte(" "))
				switch string(name) {
				case "id":
					ev.id, ev.hasID = value, true
				case "event":
					ev.typ = value
				case "data":
					ev.data = value // one line: the bench's payloads have no LF
				}
			}
			if ev.hasID || ev.typ != nil || ev.data != nil {
				if !onEvent(&ev) {
					return nil
				}
			}
		}
		n = copy(buf, b)
		if n == len(buf) {
			return fmt.Errorf("event longer than %d bytes", len(buf))
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
}

// herdMsg is a parsed herd payload.
type herdMsg struct {
	ts       int64
	index, k uint64
	part     int
}

// parseHerd parses "TS I P K x…".
func parseHerd(d []byte) (herdMsg, bool) {
	var m herdMsg
	f := [4][]byte{}
	for i := range f {
		j := bytes.IndexByte(d, ' ')
		if j < 0 {
			return m, false
		}
		f[i], d = d[:j], d[j+1:]
	}
	ts, ok1 := parseUint(f[0])
	idx, ok2 := parseUint(f[1])
	p, ok3 := parseUint(f[2])
	k, ok4 := parseUint(f[3])
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return m, false
	}
	return herdMsg{ts: int64(ts), index: idx, part: int(p), k: k}, true
}

// herdCmd is a command of the orchestrator to the herd client process.
type herdCmd struct {
	Cmd   string     `json:"cmd"`             // "herd", "status" or "report"
	URL   string     `json:"url,omitempty"`   // host:port
	Path  string     `json:"path,omitempty"`  // the route's path
	IDs   []string   `json:"ids,omitempty"`   // one per client
	Base  [][]uint64 `json:"base,omitempty"`  // per distinct ID: the last K received per partition
	Which []int      `json:"which,omitempty"` // per client: its index in IDs and Base
	Head  []uint64   `json:"head,omitempty"`  // K per partition at the head when the herd starts
	Final []uint64   `json:"final,omitempty"` // K per partition produced in all, for "report"
}

// herdStatus is the reply to "status".
type herdStatus struct {
	Clients int `json:"clients"`
	Caught  int `json:"caught"` // at the head of the herd's start
	Ended   int `json:"ended"`  // streams that failed
	Final   int `json:"final"`  // have every message of Final ("status" with Final)
}

// herdReport is the reply to "report".
type herdReport struct {
	Clients    int           `json:"clients"`
	Errors     int           `json:"errors"`
	FirstError string        `json:"firstError,omitempty"`
	GapClients int           `json:"gapClients"`
	FirstGap   string        `json:"firstGap,omitempty"`
	Dups       uint64        `json:"duplicates"`
	Skipped    uint64        `json:"skipped"`
	Missing    uint64        `json:"missing"` // of Final, not received by the report
	Foreign    uint64        `json:"foreign"` // events whose data is no herd payload
	Events     uint64        `json:"events"`
	Caught     int           `json:"caught"`
	P50        time.Duration `json:"p50"` // of the clients' catch-up times, from the herd's start
	P99        time.Duration `json:"p99"`
	Max        time.Duration `json:"max"` // every client at the head (if Caught == Clients)
	Connect    time.Duration `json:"connect"`
}

// herdStream is one herd client.
type herdStream struct {
	mu       sync.Mutex
	last     []uint64 // last K received per partition
	head     []uint64
	behind   int // partitions whose last < head
	caught   time.Duration
	dups     uint64
	skipped  uint64
	foreign  uint64
	events   uint64
	gaps     uint64
	firstGap string
	err      error
	ended    bool
	open     time.Duration // when the response headers came
}

func (s *herdStream) event(ev *sseEvent, t0 time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if string(ev.typ) == "gap" {
		s.gaps++
		if s.firstGap == "" {
			s.firstGap = string(ev.data)
		}
		return
	}
	if ev.data == nil {
		return
	}
	m, ok := parseHerd(ev.data)
	if !ok || m.part >= len(s.last) {
		s.foreign++
		return
	}
	s.events++
	last := s.last[m.part]
	switch {
	case m.k == last+1:
	case m.k <= last:
		s.dups++
		return
	default:
		s.skipped += m.k - last - 1
	}
	s.last[m.part] = m.k
	if last < s.head[m.part] && m.k >= s.head[m.part] {
		s.behind--
		if s.behind == 0 {
			s.caught = time.Since(t0)
		}
	}
}

// herdClientProc is the state of the herd client process.
type herdClientProc struct {
	streams []*herdStream
	t0      time.Time
	cancel  context.CancelFunc
}

// raiseNoFile raises this process's open file limit as far as it may.
func raiseNoFile() {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) != nil {
		return
	}
	want := max(rl.Max, 1<<20)
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}) != nil {
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: rl.Max, Max: rl.Max})
	}
}

func runHerdClient() error {
	raiseNoFile()
	p := &herdClientProc{}
	r := replier{enc: json.NewEncoder(os.Stdout)}
	dec := json.NewDecoder(os.Stdin)
	for {
		var c herdCmd
		if err := dec.Decode(&c); err != nil {
			if p.cancel != nil {
				p.cancel()
			}
			return nil
		}
		switch c.Cmd {
		case "herd":
			if err := p.start(c); err != nil {
				r.fail(err)
				continue
			}
			r.reply(struct{}{})
		case "status":
			r.reply(p.status(c.Final))
		case "report":
			r.reply(p.report(c.Final))
		default:
			r.fail(fmt.Errorf("unknown command %q", c.Cmd))
		}
	}
}

// start opens every client at once (at most 256 dialling at a time) and
// returns.
func (p *herdClientProc) start(c herdCmd) error {
	if len(c.Which) == 0 || len(c.Head) == 0 {
		return errors.New("herd: no clients")
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.t0 = time.Now()
	sem := make(chan struct{}, 256)
	for _, w := range c.Which {
		s := &herdStream{last: slices.Clone(c.Base[w]), head: c.Head}
		for i, k := range s.last {
			if k < s.head[i] {
				s.behind++
			}
		}
		if s.behind == 0 {
			s.caught = 0
		}
		p.streams = append(p.streams, s)
		header := []string{"Last-Event-ID: " + c.IDs[w]}
		go func() {
			sem <- struct{}{}
			released := false
			release := func() {
				if !released {
					released = true
					<-sem
				}
			}
			err := readSSE(ctx, c.URL, c.Path, header, 16<<10, func(net.Conn) {
				release()
				s.mu.Lock()
				s.open = time.Since(p.t0)
				s.mu.Unlock()
			}, func(ev *sseEvent) bool {
				s.event(ev, p.t0)
				return true
			})
			release()
			s.mu.Lock()
			s.ended, s.err = true, err
			s.mu.Unlock()
		}()
	}
	return nil
}

func (p *herdClientProc) status(final []uint64) herdStatus {
	st := herdStatus{Clients: len(p.streams)}
	for _, s := range p.streams {
		s.mu.Lock()
		if s.behind == 0 {
			st.Caught++
		}
		if s.ended {
			st.Ended++
		}
		if final != nil {
			all := true
			for i, k := range final {
				all = all && s.last[i] >= k
			}
			if all {
				st.Final++
			}
		}
		s.mu.Unlock()
	}
	return st
}

func (p *herdClientProc) report(final []uint64) herdReport {
	r := herdReport{Clients: len(p.streams)}
	var times []time.Duration
	for _, s := range p.streams {
		s.mu.Lock()
		if s.err != nil && !errors.Is(s.err, context.Canceled) {
			r.Errors++
			if r.FirstError == "" {
				r.FirstError = s.err.Error()
			}
		}
		if s.gaps > 0 {
			r.GapClients++
			if r.FirstGap == "" {
				r.FirstGap = s.firstGap
			}
		}
		r.Dups += s.dups
		r.Skipped += s.skipped
		r.Foreign += s.foreign
		r.Events += s.events
		for i, k := range final {
			if i < len(s.last) && s.last[i] < k {
				r.Missing += k - s.last[i]
			}
		}
		if s.behind == 0 {
			times = append(times, s.caught)
		}
		r.Connect = max(r.Connect, s.open)
		s.mu.Unlock()
	}
	r.Caught = len(times)
	if len(times) > 0 {
		slices.Sort(times)
		q := func(f float64) time.Duration { return times[min(len(times)-1, int(f*float64(len(times))))] }
		r.P50, r.P99, r.Max = q(0.50), q(0.99), times[len(times)-1]
	}
	if p.cancel != nil {
		p.cancel()
	}
	return r
}

// Orchestrator side.

// callJSON sends v as one line (unless nil) and decodes the reply into
// reply, as child.call does for a command.
func (c *child) callJSON(v any, reply any, timeout time.Duration) error {
	if v != nil {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if _, err := c.stdin.Write(append(b, '\n')); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	return c.call(command{}, reply, timeout)
}

// herdPercentile is a helper for the extra measurements: the q quantile
// of ds (sorted in place).
func herdPercentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(q*float64(len(ds))))]
}

// liveWatch is a live client run in the orchestrator: it connects without
// a Last-Event-ID and records each herd message's produce-to-receive
// latency and index.
type liveWatch struct {
	mu      sync.Mutex
	lat     []time.Duration
	last    uint64 // last index received
	events  atomic.Uint64
	gaps    uint64
	err     error
	done    chan struct{}
	cancel  context.CancelFunc
	counted bool
}

func startLiveWatch(addr, path string, bufSize int) *liveWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &liveWatch{done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(w.done)
		err := readSSE(ctx, addr, path, nil, bufSize, nil, func(ev *sseEvent) bool {
			now := time.Now().UnixNano()
			if string(ev.typ) == "gap" {
				w.mu.Lock()
				w.gaps++
				w.mu.Unlock()
				return true
			}
			m, ok := parseHerd(ev.data)
			if !ok {
				return true
			}
			w.events.Add(1)
			w.mu.Lock()
			if w.counted {
				w.lat = append(w.lat, time.Duration(now-m.ts))
			}
			w.last = m.index
			w.mu.Unlock()
			return true
		})
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
	}()
	return w
}

// window returns the latencies recorded since the last call (or since
// recording was turned on), and turns recording on.
func (w *liveWatch) window() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.lat
	w.lat, w.counted = nil, true
	return l
}

func (w *liveWatch) stop() error {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	if errors.Is(w.err, context.Canceled) {
		return nil
	}
	return w.err
}
