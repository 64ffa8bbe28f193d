// This file is the client process (-role=client): the same client for every
// server. Each stream is one goroutine on a raw TCP connection that sends a
// GET, reads the response with http.ReadResponse (which undoes the chunked
// encoding) in big reads, splits the bytes at "\n\n" and looks at each
// event only as far as it must: the id, whether it carries data or is a
// gap, and in latency runs the publish time at the start of the data.
//
// Every event published by the benchmark has a decimal ID 1, 2, 3, ...;
// warm-up events have ID "w". A client counts the numbered events it
// receives, the gap events, and every numbered event that does not follow
// the previous one (a loss, duplicate or reordering). The client process
// reports the smallest count over its streams to the server process every
// millisecond.

package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// stream is one client connection and what it has received.
type stream struct {
	events atomic.Uint64 // numbered events received
	warm   atomic.Bool   // a warm-up event was received
	ended  atomic.Bool   // the reader returned

	mu       sync.Mutex // guards the fields below; held by the reader per read
	last     uint64     // ID of the last numbered event
	gaps     uint64
	disorder uint64
	hist     *histogram // publish-to-receive latency, in latency runs
	err      error

	broker bool           // broker payloads: the sequence number is in the data
	seen   []uint64       // in broker mode, a bit per sequence number received
	dups   uint64         // in broker mode, events received twice
	gap    string         // the first gap event, in broker mode
	keys   int            // in broker mode with a ?key= filter: the number of keys
	key    int            // and this stream's: it is sent seq with seq%keys == key
	others uint64         // sequence numbers of other keys received (mismatches)
	first  *firstReceipts // in broker mode with First, shared by the streams
}

// covered returns the largest n such that the stream has every message
// meant for it among 1..n, from its count: an unfiltered stream is meant
// every message; a filtered one (key j of k) those with seq%k == j, whose
// next after c received is the (c+1)-th of j, j+k, j+2k, ... (k, 2k, ...
// for j = 0).
func (s *stream) covered() uint64 {
	n := s.events.Load()
	if s.keys == 0 {
		return n
	}
	first := uint64(s.key)
	if first == 0 {
		first = uint64(s.keys)
	}
	return first + n*uint64(s.keys) - 1
}

// meant returns how many of the messages 1..published are meant for s.
func (s *stream) meant(published uint64) uint64 {
	if s.keys == 0 {
		return published
	}
	first := uint64(s.key)
	if first == 0 {
		first = uint64(s.keys)
	}
	if published < first {
		return 0
	}
	return (published-first)/uint64(s.keys) + 1
}

// clientProc is the state of the client process.
type clientProc struct {
	streams []*stream
	stalled net.Conn
	prog    net.Conn
	cpu0    time.Duration  // CPU time used when the streams were ready
	total   histogram      // the latencies of earlier reports with Reset
	direct  *stream        // the direct consumer of scenario L, if started
	first   *firstReceipts // with First, the first receipt of each message
}

// connectResult is the reply to "connect".
type connectResult struct {
	Ready   int           `json:"ready"`
	Errors  int           `json:"errors"`
	Elapsed time.Duration `json:"elapsed"`
}

// clientReport is the reply to "report".
type clientReport struct {
	Streams    int           `json:"streams"`
	Errors     int           `json:"errors"`
	FirstError string        `json:"firstError,omitempty"`
	MinEvents  uint64        `json:"minEvents"`
	MaxEvents  uint64        `json:"maxEvents"`
	Gaps       uint64        `json:"gaps"`
	Disorder   uint64        `json:"disorder"`
	Duplicates uint64        `json:"duplicates,omitempty"` // broker mode
	Events     uint64        `json:"events"`               // received, summed over the streams
	Mismatches uint64        `json:"mismatches,omitempty"` // filtered: received of another key
	Missing    uint64        `json:"missing,omitempty"`    // filtered: meant for a stream but not received, summed
	Latency    latency       `json:"latency"`
	Total      latency       `json:"total"`             // with Reset: of every report so far
	Stalled    string        `json:"stalled,omitempty"` // what became of the non-reading client
	CPU        time.Duration `json:"cpu"`               // since the streams were ready
	Direct     *directReport `json:"direct,omitempty"`  // the direct consumer of scenario L
	First      *latency      `json:"first,omitempty"`   // with First: of each message's first receipt by a stream
}

// latency summarizes a histogram.
type latency struct {
	N   uint64        `json:"n"`
	P50 time.Duration `json:"p50"`
	P90 time.Duration `json:"p90"`
	P99 time.Duration `json:"p99"`
	Max time.Duration `json:"max"`
}

func runClient() error {
	p := &clientProc{}
	r := replier{enc: json.NewEncoder(os.Stdout)}
	for c := range commands {
		switch c.Cmd {
		case "connect":
			res, err := p.connect(c)
			if err != nil {
				r.fail(err)
				continue
			}
			r.reply(res)
		case "report":
			r.reply(p.report(c.Reset, c.Published))
		case "direct":
			if c.Direct == nil {
				r.fail(errors.New("direct: no stream"))
				continue
			}
			if err := p.startDirect(*c.Direct); err != nil {
				r.fail(err)
				continue
			}
			r.reply(struct{}{})
		default:
			r.fail(fmt.Errorf("unknown command %q", c.Cmd))
		}
	}
	return nil
}

// connect opens c.N streams to c.URL (first the non-reading one, with
// c.Stall), over c.TLS, waits until each has received a warm-up event,
// and starts reporting progress to c.Progress if set.
func (p *clientProc) connect(c command) (connectResult, error) {
	start := time.Now()
	dialer, err := newStreamDialer(c.TLS)
	if err != nil {
		return connectResult{}, err
	}
	if c.Stall {
		if dialer.mode != tlsOff {
			return connectResult{}, errors.New("the non-reading client runs without TLS")
		}
		// A small receive buffer, set before connecting so that the window
		// is small too: the server's writes to it block soon.
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
			return errors.Join(err, serr)
		}}
		nc, err := d.Dial("tcp", c.URL)
		if err != nil {
			return connectResult{}, err
		}
		req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n", streamPath, c.URL)
		if _, err := io.WriteString(nc, req); err != nil {
			return connectResult{}, err
		}
		p.stalled = nc
	}

	sem := make(chan struct{}, 64) // concurrent dials, to spare the accept queue
	for i := range c.N {
		s := &stream{broker: c.Broker}
		if c.Latency {
			s.hist = new(histogram)
		}
		if c.First && c.Broker {
			if p.first == nil {
				p.first = newFirstReceipts()
			}
			s.first = p.first
		}
		path := streamPath
		if c.Filter && c.Keys > 0 {
			s.keys, s.key = c.Keys, i%c.Keys
			path = fmt.Sprintf("%s&key=k%d", streamPath, s.key)
		}
		p.streams = append(p.streams, s)
		sem <- struct{}{}
		go s.run(dialer, c.URL, path, c.BufSize, sem)
	}

	deadline := time.Now().Add(2 * time.Minute)
	for {
		ready, errs := 0, 0
		for _, s := range p.streams {
			switch {
			case s.warm.Load():
				ready++
			case s.ended.Load():
				errs++
			}
		}
		if ready+errs == len(p.streams) || time.Now().After(deadline) {
			if c.Progress != "" {
				if err := p.startProgress(c.Progress); err != nil {
					return connectResult{}, err
				}
			}
			p.cpu0 = cpuTime()
			return connectResult{Ready: ready, Errors: errs, Elapsed: time.Since(start)}, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// run reads the stream until it fails. It releases sem once the response
// head is read.
func (s *stream) run(d *streamDialer, addr, path string, bufSize int, sem chan struct{}) {
	defer s.ended.Store(true)
	fail := func(err error) {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
	}
	resp, closeConn, err := d.open(addr, path, bufSize)
	<-sem
	if err != nil {
		fail(err)
		return
	}
	defer closeConn()
	if resp.StatusCode != http.StatusOK {
		fail(fmt.Errorf("status %s", resp.Status))
		return
	}
	buf := make([]byte, bufSize)
	n := 0 // buf[:n] holds the start of an incomplete event
	for {
		m, err := resp.Body.Read(buf[n:])
		n += m
		if end := bytes.LastIndex(buf[:n], eventEnd); end >= 0 {
			end += len(eventEnd)
			var now int64
			if s.hist != nil {
				now = time.Now().UnixNano()
			}
			s.mu.Lock()
			s.scan(buf[:end], now)
			s.mu.Unlock()
			n = copy(buf, buf[end:n])
		} else if n == len(buf) {
			err = errors.Join(err, fmt.Errorf("event longer than %d bytes", len(buf)))
		}
		if err != nil {
			fail(err)
			return
		}
	}
}

var (
	eventEnd  = []byte("\n\n")
	idPrefix  = []byte("id: ")
	dataField = []byte("data: ")
	typeField = []byte("event: ")
	gapType   = []byte("event: gap\n")
)

// scan looks at the whole events in b. now is the time they were received,
// in Unix nanoseconds, for latency runs. s.mu must be held.
func (s *stream) scan(b []byte, now int64) {
	count := s.events.Load()
	warm := false
	for len(b) > 0 {
		i := bytes.Index(b, eventEnd)
		if i < 0 {
			break
		}
		ev := b[:i+1] // up to and including the last field's LF
		b = b[i+2:]

		var id []byte
		if bytes.HasPrefix(ev, idPrefix) {
			j := bytes.IndexByte(ev, '\n')
			id, ev = ev[len(idPrefix):j], ev[j+1:]
		}
		if bytes.HasPrefix(ev, typeField) {
			if bytes.HasPrefix(ev, gapType) {
				s.gaps++
				if s.broker && s.gap == "" {
					s.gap = string(ev)
				}
			}
			continue
		}
		if !bytes.HasPrefix(ev, dataField) { // a comment or a retry line
			continue
		}
		if s.broker {
			switch s.scanBroker(ev[len(dataField):], now) {
			case brokerWarm:
				warm = true
			case brokerNew:
				count++
			}
			continue
		}
		if len(id) == 1 && id[0] == 'w' {
			warm = true
			continue
		}
		seq, ok := parseUint(id)
		if !ok || seq != s.last+1 {
			s.disorder++
		}
		s.last = seq
		count++
		if s.hist != nil {
			if ts, ok := parseUint(ev[len(dataField):min(len(ev), len(dataField)+19)]); ok {
				s.hist.add(time.Duration(now - int64(ts)))
			}
		}
	}
	s.events.Store(count)
	if warm {
		s.warm.Store(true)
	}
}

// parseUint parses a decimal number.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

// startProgress sends the smallest event count over the streams to the
// server at addr whenever it grows, checking every millisecond.
func (p *clientProc) startProgress(addr string) error {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	p.prog = nc
	go func() {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		var sent uint64
		var b [8]byte
		for range t.C {
			low := uint64(1<<64 - 1)
			for _, s := range p.streams {
				low = min(low, s.covered())
			}
			if low > sent && len(p.streams) > 0 {
				sent = low
				binary.BigEndian.PutUint64(b[:], low)
				if _, err := nc.Write(b[:]); err != nil {
					return
				}
			}
		}
	}()
	return nil
}

// report gathers the streams' statistics. It reads what the non-reading
// client was sent, to learn whether the server dropped it. With reset, the
// latencies start anew after it, and Total sums them over the reports.
// published is the number of messages produced, for the filtered streams'
// Missing.
func (p *clientProc) report(reset bool, published uint64) clientReport {
	r := clientReport{Streams: len(p.streams), MinEvents: 1<<64 - 1}
	var h histogram
	for _, s := range p.streams {
		s.mu.Lock()
		n := s.events.Load()
		r.MinEvents = min(r.MinEvents, n)
		r.MaxEvents = max(r.MaxEvents, n)
		r.Gaps += s.gaps
		r.Disorder += s.disorder
		r.Duplicates += s.dups
		r.Events += n
		r.Mismatches += s.others
		if s.keys > 0 && published > 0 {
			r.Missing += s.meant(published) - min(n, s.meant(published))
		}
		if s.err != nil {
			r.Errors++
			if r.FirstError == "" {
				r.FirstError = s.err.Error()
			}
		}
		if s.hist != nil {
			h.merge(s.hist)
			if reset {
				*s.hist = histogram{}
			}
		}
		s.mu.Unlock()
	}
	if len(p.streams) == 0 {
		r.MinEvents = 0
	}
	r.Latency = h.summary()
	if reset {
		p.total.merge(&h)
		r.Total = p.total.summary()
	}
	if p.stalled != nil {
		r.Stalled = drain(p.stalled)
	}
	r.CPU = cpuTime() - p.cpu0
	r.Direct = p.directReport(reset)
	if p.first != nil {
		l := p.first.summary(reset)
		r.First = &l
	}
	return r
}

// drain reads what is left on the non-reading client's connection and says
// whether the server had closed it.
func drain(nc net.Conn) string {
	_ = nc.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := io.Copy(io.Discard, nc)
	var ne net.Error
	switch {
	case err == nil:
		return fmt.Sprintf("closed by the server after %d bytes", n)
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Sprintf("still open after %d bytes", n)
	default:
		return fmt.Sprintf("failed after %d bytes: %v", n, err)
	}
}

// A histogram counts durations in microseconds in log-linear buckets:
// exact below 64 µs, then 32 buckets per power of two (3 % precision).
type histogram struct {
	counts [64 + 58*32]uint64
	max    time.Duration
}

func bucket(us uint64) int {
	if us < 64 {
		return int(us)
	}
	shift := bits.Len64(us) - 6
	return 64 + (shift-1)*32 + int(us>>shift) - 32
}

// bucketMid returns a duration in the middle of bucket i.
func bucketMid(i int) time.Duration {
	if i < 64 {
		return time.Duration(i) * time.Microsecond
	}
	shift := (i-64)/32 + 1
	low := uint64(32+(i-64)%32) << shift
	return time.Duration(low+(uint64(1)<<shift)/2) * time.Microsecond
}

func (h *histogram) add(d time.Duration) {
	d = max(d, 0)
	h.counts[min(bucket(uint64(d/time.Microsecond)), len(h.counts)-1)]++
	h.max = max(h.max, d)
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.max = max(h.max, o.max)
}

func (h *histogram) summary() latency {
	var l latency
	for _, c := range h.counts {
		l.N += c
	}
	if l.N == 0 {
		return l
	}
	quantile := func(q float64) time.Duration {
		rank := uint64(q * float64(l.N))
		var seen uint64
		for i, c := range h.counts {
			seen += c
			if seen > rank {
				return min(bucketMid(i), h.max)
			}
		}
		return h.max
	}
	l.P50, l.P90, l.P99, l.Max = quantile(0.50), quantile(0.90), quantile(0.99), h.max
	return l
}
