package esource

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"
)

// A Part is one EventSource of a merged stream (see ServeMerged).
type Part struct {
	// Source is the EventSource whose events the part carries.
	Source *EventSource
	// Start is where the part begins, as for [EventSource.Serve].
	Start Start
	// Filter lets through the part's events the client is sent; nil lets
	// every event through.
	Filter Filter
	// Name types the part's events: an event without a type of its own is
	// sent with type Name, and an event of type T (a gap among them) with
	// type Name:T. It must not hold CR or LF, nor be the start of another
	// part's Name followed by a colon, so that the types tell the parts
	// apart.
	Name string
}

// A MergedID makes the event IDs of a merged stream from the IDs of its
// parts, so that a browser that reconnects resumes each part where it
// was. ServeMerged calls it from one goroutine at a time.
type MergedID interface {
	// Set records id as the ID of the newest event of part i that the
	// client was sent, or that its filter skipped; id is valid during the
	// call only. It reports false for an ID it cannot carry, which ends
	// the stream.
	Set(i int, id []byte) bool
	// AppendID appends the merged ID to dst, or nothing when no part has
	// an ID yet. It reports false when the ID would pass a bound of its
	// own: the event then goes without an ID (and what it appended is
	// dropped).
	AppendID(dst []byte) ([]byte, bool)
}

// ServeMerged streams the events of several EventSources on one response,
// each part from its own start and through its own filter, as Serve
// streams one: from each EventSource's log, caught up through its History,
// or after a gap event, never holding a publisher back. An event goes out
// with the merged ID of ids, which Set has been told of every part's
// events up to and including it; its type names its part (see
// Part.Name). The events' bytes are those of the parts' logs: only the ID
// and type lines are the client's own.
//
// Before its first event the stream carries the merged ID of the parts'
// starts: each part's Start.LastEventID, or for a part that starts with
// the next event published, the ID of the event before it (a part that
// starts with a gap has none until the gap). A browser that reconnects
// before any event resumes every part exactly.
//
// The response's heartbeat, retry, write timeout, drain retry and
// connection takeover are those of the first part's EventSource. The
// stream ends when the client goes, at the deadline of the request's
// context, or once every part's EventSource has shut down (then with a
// retry line, as Serve ends).
func ServeMerged(w http.ResponseWriter, r *http.Request, ids MergedID, parts ...Part) {
	if len(parts) == 0 {
		http.Error(w, "esource: a merged stream without parts", http.StatusInternalServerError)
		return
	}
	for _, p := range parts {
		if strings.ContainsAny(p.Name, "\r\n") {
			http.Error(w, "esource: a merged stream's part name holds CR or LF", http.StatusInternalServerError)
			return
		}
	}
	es := parts[0].Source
	m := &merger{cfg: &es.cfg, ids: ids, parts: make([]*mergedPart, len(parts))}
	for i, p := range parts {
		mp := &mergedPart{m: m, i: i, start: p.Start}
		mp.prefix = append(append(mp.prefix, "event: "...), p.Name...)
		mp.c = &client{es: p.Source, sink: mp, filter: p.Filter}
		m.parts[i] = mp
	}
	es.respond(w, r, m)
}

// A merger is the stream of a merged client: a client of each part's
// EventSource, whose writes it rewrites with the merged ID and the part's
// type, and writes to its own sink, one at a time.
type merger struct {
	cfg     *config // of the first part's EventSource
	ids     MergedID
	parts   []*mergedPart
	closed  func() bool
	running bool // run has begun: it unregisters the parts' clients

	mu        sync.Mutex // held while writing; guards what follows
	sink      sink
	lastWrite time.Time
	out       [][]byte // the rewritten buffers of a write
	own       []byte   // the ID and type lines of out
	err       error    // the first error of a write: every part ends
	warned    bool     // the logger was told of an ID too long
}

// A mergedPart is the sink of a part's client.
type mergedPart struct {
	m      *merger
	i      int
	c      *client
	start  Start
	prefix []byte // "event: Name"

	// The event being read, which may span several writes.
	hasID   bool // its ID line was read, and Set
	hasType bool // its type line was read, into typ
	typ     []byte
	written bool // its ID and type lines were written: data follows
}

func (m *merger) attach(s sink, closed func() bool) bool {
	m.sink, m.closed = s, closed
	for i, p := range m.parts {
		if !p.c.es.register(p.c) {
			for _, q := range m.parts[:i] {
				q.c.es.unregister(q.c)
			}
			return false
		}
	}
	for i, p := range m.parts {
		switch s := p.start; {
		case s.Gap != nil: // the gap tells where the part goes on
		case s.LastEventID != "":
			m.ids.Set(i, []byte(s.LastEventID))
		case p.c.lastID != "": // after the newest event before the client came
			m.ids.Set(i, []byte(p.c.lastID))
		}
	}
	return true
}

// detach unregisters the parts' clients, unless run did, each as its
// client ended: a part's EventSource that shuts down must not wait for
// the others.
func (m *merger) detach() {
	if m.running {
		return
	}
	for _, p := range m.parts {
		p.c.es.unregister(p.c)
	}
}

// begin writes first and, if ids holds one, the merged ID of the parts'
// starts.
func (m *merger) begin(first []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.own = append(m.own[:0], first...)
	m.appendIDLine()
	if len(m.own) > len(first) {
		m.own = append(m.own, '\n') // the ID line's frame ends
	}
	return m.writeOwn()
}

// run serves the parts, each from a goroutine of its own, and heartbeats
// the stream while none writes.
func (m *merger) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ended := make(chan error, len(m.parts))
	m.running = true
	for _, p := range m.parts {
		go func() {
			defer p.c.es.unregister(p.c)
			ended <- p.c.serve(ctx, p.start)
		}()
	}
	// Heartbeats and probes come from the first part's wheel, as its own
	// clients' do (see client.deadline).
	wheel := m.parts[0].c.es.wheel
	probing := m.closed != nil && m.cfg.probe > 0
	probeAt := time.Now().Add(m.cfg.probe)
	var tick <-chan struct{}
	var err error
	for left := len(m.parts); left > 0; {
		if tick == nil {
			if due, ok := m.deadline(probing, probeAt); ok {
				tick = wheel.at(due)
			}
		}
		select {
		case e := <-ended:
			left--
			if e != nil && err == nil {
				err = e // the client went, or its context ended: so do the others
				cancel()
			}
		case <-tick:
			tick = nil
			if probing && !time.Now().Before(probeAt) {
				probeAt = time.Now().Add(m.cfg.probe)
				if m.closed() && err == nil {
					err = errClientGone
					cancel()
				}
			}
			if e := m.heartbeat(); e != nil && err == nil {
				err = e // the parts end at their next write, or now
				cancel()
			}
		}
	}
	if err != nil {
		return err
	}
	// Every part's EventSource shut down, and sent what it held.
	m.mu.Lock()
	defer m.mu.Unlock()
	m.own = append(m.own[:0], retryLine(jitter(m.cfg.drainRetry))...)
	return m.writeOwn()
}

// deadline returns when the merged stream is next due a heartbeat or,
// if probing, a look at its connection (at probeAt); false for never.
func (m *merger) deadline(probing bool, probeAt time.Time) (time.Time, bool) {
	m.mu.Lock()
	wrote := m.lastWrite
	m.mu.Unlock()
	return nextDue(probing, probeAt, m.cfg.heartbeat, wrote)
}

// heartbeat writes a comment if nothing was written for a heartbeat
// interval.
func (m *merger) heartbeat() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if d := m.cfg.heartbeat; d <= 0 || time.Since(m.lastWrite) < d {
		return nil
	}
	m.own = append(m.own[:0], heartbeatLine...)
	return m.writeOwn()
}

// write rewrites bufs, what part p's client sends, and writes them: the
// events with the merged ID and p's type, without the comments and retry
// lines, which are the merged stream's own.
func (p *mergedPart) write(bufs [][]byte) error {
	m := p.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	m.out, m.own = m.out[:0], m.own[:0]
	for _, b := range bufs {
		if !p.rewrite(b) {
			m.err = errBadPartID
			m.cfg.logger.Error("esource: a merged stream's part sent an ID the merged ID cannot carry", "part", string(p.prefix[len("event: "):]))
			return m.err
		}
	}
	if len(m.out) == 0 {
		return nil
	}
	err := m.sink.write(m.out)
	clear(m.out)
	if err != nil {
		m.err = err
		return err
	}
	m.lastWrite = time.Now()
	return nil
}

// rewrite appends to m.out the rewriting of b, whole lines of the wire
// format as appendWire writes them: for each event, its ID and type lines
// made anew in m.own, then its data lines as they lie in b. It reports
// false if m.ids refused an ID.
func (p *mergedPart) rewrite(b []byte) bool {
	m := p.m
	run := -1 // where the data lines being passed through begin, if any
	for at := 0; at < len(b); {
		end := len(b)
		if i := bytes.IndexByte(b[at:], '\n'); i >= 0 {
			end = at + i + 1
		}
		line := b[at:end]
		at = end
		switch {
		case bytes.HasPrefix(line, dataField):
			if !p.written {
				p.writeHead(false)
			}
			if run < 0 {
				run = end - len(line)
			}
			continue
		case len(line) == 1: // the blank line that ends an event
			switch {
			case p.written:
				if run < 0 {
					run = end - 1
				}
				m.out = append(m.out, b[run:end])
				run = -1
			case p.hasType || p.hasID:
				p.writeHead(true)
			}
			p.hasID, p.hasType, p.written = false, false, false
			continue
		}
		if run >= 0 {
			m.out = append(m.out, b[run:end-len(line)])
			run = -1
		}
		switch {
		case bytes.HasPrefix(line, idField):
			if !m.ids.Set(p.i, line[len(idField):len(line)-1]) {
				return false
			}
			p.hasID = true
		case bytes.HasPrefix(line, eventField):
			p.typ = append(p.typ[:0], line[len(eventField):len(line)-1]...)
			p.hasType = true
		}
		// Comments and retry lines are the merged stream's own.
	}
	if run >= 0 {
		m.out = append(m.out, b[run:])
	}
	return true
}

var (
	idField    = []byte("id: ")
	eventField = []byte("event: ")
	dataField  = []byte("data:")
)

// writeHead appends to m.out the ID and type lines of p's event, and for
// an event without data (blank) the blank line that ends it.
func (p *mergedPart) writeHead(blank bool) {
	m := p.m
	n := len(m.own)
	if p.hasID {
		m.appendIDLine()
	}
	if p.hasType || !blank {
		m.own = append(m.own, p.prefix...)
		if p.hasType {
			m.own = append(m.own, ':')
			m.own = append(m.own, p.typ...)
		}
		m.own = append(m.own, '\n')
	}
	if len(m.own) == n {
		return // an ID-only event, and no merged ID to send
	}
	if blank {
		m.own = append(m.own, '\n')
	}
	m.out = append(m.out, m.own[n:len(m.own):len(m.own)])
	p.written = !blank
}

// appendIDLine appends the merged ID's line to m.own, if ids holds an ID
// within its bound.
func (m *merger) appendIDLine() {
	n := len(m.own)
	m.own = append(m.own, idField...)
	own, ok := m.ids.AppendID(m.own)
	switch {
	case !ok:
		m.own = m.own[:n]
		if !m.warned {
			m.warned = true
			m.cfg.logger.Warn("esource: a merged stream's ID would pass its bound; events go without one")
		}
	case len(own) == len(m.own):
		m.own = m.own[:n] // no part has an ID yet
	default:
		m.own = append(own, '\n')
	}
}

// writeOwn writes m.own as it is. m.mu must be held.
func (m *merger) writeOwn() error {
	if m.err != nil {
		return m.err
	}
	if err := m.sink.write([][]byte{m.own}); err != nil {
		m.err = err
		return err
	}
	m.lastWrite = time.Now()
	return nil
}

func (p *mergedPart) abort() { p.m.sink.abort() }

var errBadPartID = errors.New("esource: a part's ID the merged ID cannot carry")
