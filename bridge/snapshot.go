package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/esbridge/esbridge/esource"
	"github.com/esbridge/esbridge/internal/backoff"
)

// Snapshot views: on a route with Options.Snapshot, a client that asks
// with ?view=snapshot receives the latest message of every key as of one
// position P, then the stream after P:
//
//	event: snapshot-begin   data {"reason":"new"} (or "expired"), no ID
//	...                     the latest message of each key, as the route
//	                        sends messages, without IDs
//	event: snapshot-end     data {"keys":N}, ID P
//	...                     every message after P, live
//
// The route keeps one table of the latest message per key, its events
// encoded once: built once from the broker (the whole stream from its
// start, or a [Snapshotter]'s shorter answer), then kept by the live
// reader. A snapshot is sent from memory, and costs no broker reader: the
// client then joins the log at P, as a resuming client does.
//
// The table is an append-only list of entries and an index of the current
// entry of each key. A write appends an entry and marks the one it
// replaces (or, for a delete, the key's entry) with the write's clock. A
// snapshot taken at clock C sends the entries appended by then that no
// write up to C marked: readers take no lock and copy nothing while the
// live reader goes on writing. When half the entries are dead, the live
// entries are copied into a new list; readers of the old one keep it
// until they are done. So the table holds at most twice its live bytes.

// Event types of snapshot views.
const (
	// SnapshotBeginType is the type of the event that begins a snapshot:
	// the page clears its table. Its data is JSON: {"reason":"new"}, or
	// {"reason":"expired"} for a client whose position the broker no
	// longer held.
	SnapshotBeginType = "snapshot-begin"
	// SnapshotEndType is the type of the event that ends a snapshot. Its
	// data is JSON, {"keys":N}, the number of keys sent, and its ID is
	// the position the snapshot was taken at: the stream goes on from it.
	SnapshotEndType = "snapshot-end"
	// DeleteType is the type of the event of a message that deletes its
	// key, on a snapshot route: a Kafka message without a value (a
	// tombstone), a JetStream KV delete or purge (header KV-Operation).
	// Its data is JSON, {"key":"..."}, or {"key_base64":"..."} for a key
	// that is not UTF-8.
	DeleteType = "delete"
)

// kindSnapshot is the kind of the start of a client that asks for a
// snapshot: an eventID that no ID encodes, which no position covers, so
// that the EventSource hands the client to Replay.
const kindSnapshot = 0xf

// snapshotMarker is the Last-Event-ID of a client that asks for a
// snapshot, as the EventSource knows it until the snapshot ends: no event
// has it.
const snapshotMarker = "snapshot"

// snapshotEntryOverhead is what an entry costs beyond its key and its
// encoded event, counted against Options.SnapshotMaxBytes.
const snapshotEntryOverhead = 128

// A Snapshotter is a Source that can read, for a snapshot table, less of
// its stream than all of it: the last message of each subject
// (JetStream's last-per-subject delivery). The bridge uses it on routes
// whose snapshot key is the subject (snapshot=subject), and otherwise
// reads the stream from its start.
type Snapshotter interface {
	// OpenSnapshot returns a reader of the last message of each subject
	// of the stream before upTo (a position of the live reader), in any
	// order; it may return older or later messages too. Its Next returns
	// io.EOF once it has returned them all. ctx bounds the opening only.
	OpenSnapshot(ctx context.Context, upTo Position) (Reader, error)
}

// snapshotKey returns m's key on a snapshot route, and whether it has one
// (a route without a snapshot view has none).
func (t translator) snapshotKey(m *Message) ([]byte, bool) {
	switch o := t.opts.Snapshot; {
	case o == "":
		return nil, false
	case o == SnapshotKey:
		return m.Key, m.Key != nil
	case o == TypeSubject:
		if m.Subject == "" {
			return nil, false
		}
		return []byte(kvKey(m.Subject)), true
	default:
		name := strings.TrimPrefix(o, "header:")
		for _, h := range m.Headers {
			if strings.EqualFold(h.Key, name) {
				return []byte(h.Value), true
			}
		}
		return nil, false
	}
}

// kvKey returns a NATS KV bucket's key from its subject, $KV.BUCKET.KEY;
// any other subject as it is.
func kvKey(subject string) string {
	rest, ok := strings.CutPrefix(subject, "$KV.")
	if !ok {
		return subject
	}
	if _, key, ok := strings.Cut(rest, "."); ok {
		return key
	}
	return subject
}

// deletes reports whether m deletes its key: a JetStream KV delete or
// purge, or a message without a value on a source with keys (a Kafka
// tombstone; the Kafka client reads an empty value as none).
func (t translator) deletes(m *Message) bool {
	for _, h := range m.Headers {
		if h.Key == "KV-Operation" && (h.Value == "DEL" || h.Value == "PURGE") {
			return true
		}
	}
	return t.info.Keyed && len(m.Data) == 0
}

// deletion returns the data of the delete event of key.
func deletion(key []byte) []byte {
	var v struct {
		Key       *string `json:"key,omitempty"`
		KeyBase64 []byte  `json:"key_base64,omitempty"`
	}
	if utf8.Valid(key) {
		k := string(key)
		v.Key = &k
	} else {
		v.KeyBase64 = key
	}
	b, _ := json.Marshal(v) // every field encodes
	return b
}

// A snapEntry is one message of the table: a key's latest, until a later
// write marks it.
type snapEntry struct {
	key  string
	ev   esource.Encoded // without ID
	dead atomic.Uint64   // the clock of the write that replaced or deleted it; 0 while current
}

func (e *snapEntry) size() int64 { return int64(len(e.key) + e.ev.Len() + snapshotEntryOverhead) }

// A snapGen is one generation of the table's entries: append-only, until
// it is compacted into the next.
type snapGen struct {
	entries []*snapEntry
	index   map[string]int // key → its current entry
	clock   uint64         // writes so far
	dead    int            // marked entries
	bytes   int64          // of the current entries
}

func newSnapGen() *snapGen { return &snapGen{index: make(map[string]int)} }

// A snapOp is a write to the table: a key's new message, or its deletion.
type snapOp struct {
	key string
	ev  esource.Encoded
	del bool
}

// write applies op.
func (g *snapGen) write(op snapOp) {
	g.clock++
	if i, ok := g.index[op.key]; ok {
		old := g.entries[i]
		old.dead.Store(g.clock)
		g.dead++
		g.bytes -= old.size()
		delete(g.index, op.key)
	}
	if !op.del {
		e := &snapEntry{key: op.key, ev: op.ev}
		g.index[op.key] = len(g.entries)
		g.entries = append(g.entries, e)
		g.bytes += e.size()
	}
}

// compacted returns g, or once half its entries are dead, a new
// generation of its current entries. Readers of g are not disturbed: its
// entries are never marked again.
func (g *snapGen) compacted() *snapGen {
	if g.dead < 1024 || 2*g.dead < len(g.entries) {
		return g
	}
	n := &snapGen{entries: make([]*snapEntry, 0, len(g.index)), index: make(map[string]int, len(g.index)), bytes: g.bytes}
	for _, e := range g.entries {
		if e.dead.Load() == 0 {
			n.index[e.key] = len(n.entries)
			n.entries = append(n.entries, &snapEntry{key: e.key, ev: e.ev})
		}
	}
	return n
}

// The states of a snapshot table.
const (
	snapBuilding = iota // reading the broker; clients wait
	snapReady           // kept current by the live reader
	snapOver            // over its bounds: dropped, snapshots refused
)

// A snapTable is a route's table of the latest message per key.
type snapTable struct {
	src      Source
	tr       translator
	logger   *slog.Logger
	path     string
	maxKeys  int
	maxBytes int64

	mu      sync.Mutex
	state   int
	gen     *snapGen      // snapReady
	ready   chan struct{} // closed when the state leaves snapBuilding
	pending []snapOp      // snapBuilding: the live reader's writes, applied once built
	pendBy  int64         // their bytes
	id      string        // the ID of the last message applied: a snapshot taken now ends there
	build   uint64        // the current build, counted
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	served, refused atomic.Uint64
}

func newSnapTable(r *route) *snapTable {
	return &snapTable{
		src: r.src, tr: r.tr, logger: r.logger, path: r.path,
		maxKeys:  r.opts.SnapshotMaxKeys,
		maxBytes: r.opts.SnapshotMaxBytes,
		ready:    make(chan struct{}),
	}
}

// rebuild starts building the table again, from the broker up to upTo,
// where the live reader now stands, at the message of ID id: when the
// live reader starts, and after it lost messages or the stream was
// created again. The live reader's writes from now on wait for the build.
// The build ends with ctx.
func (t *snapTable) rebuild(ctx context.Context, upTo Position, id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cancel != nil {
		t.cancel()
	}
	if t.state != snapBuilding {
		t.ready = make(chan struct{})
	}
	t.state, t.gen, t.pending, t.pendBy, t.id = snapBuilding, nil, nil, 0, id
	upTo = slices.Clone(upTo)
	t.build++
	build := t.build
	bctx, cancel := context.WithCancel(ctx)
	t.cancel = cancel
	t.wg.Go(func() { t.run(bctx, build, upTo) })
}

// close ends the build, if any, and waits for it.
func (t *snapTable) close() {
	t.mu.Lock()
	if t.cancel != nil {
		t.cancel()
	}
	t.mu.Unlock()
	t.wg.Wait()
}

// run builds the table from the broker, retrying until it can, or ctx
// ends.
func (t *snapTable) run(ctx context.Context, build uint64, upTo Position) {
	var retry backoff.Backoff
	for ctx.Err() == nil {
		g, err := t.read(ctx, upTo)
		switch {
		case errors.Is(err, errSnapshotOver):
			t.finish(build, nil)
			return
		case err != nil:
			if ctx.Err() == nil {
				t.logger.Warn("snapshot table cannot be read; retrying", "route", t.path, "err", err)
			}
			retry.Wait(ctx)
			continue
		}
		t.finish(build, g)
		return
	}
}

// errSnapshotOver tells that a table grew past its bounds.
var errSnapshotOver = errors.New("bridge: snapshot table over its bounds")

// read reads the table's messages before upTo from the broker. Messages
// the broker deleted meanwhile (retention, a KV purge's roll-up, Kafka's
// compaction) are passed over: the table is what the broker holds.
func (t *snapTable) read(ctx context.Context, upTo Position) (*snapGen, error) {
	g := newSnapGen()
	start := Start{Earliest: true}
	for {
		err := t.readFrom(ctx, g, start, upTo)
		var exp *ExpiredError
		if !errors.As(err, &exp) {
			return g, err
		}
		start = startAt(exp.Resume)
	}
}

// readFrom reads into g the messages before upTo from start on.
func (t *snapTable) readFrom(ctx context.Context, g *snapGen, start Start, upTo Position) error {
	var rd Reader
	var err error
	s, last := t.src.(Snapshotter)
	last = last && t.tr.opts.Snapshot == TypeSubject
	if last {
		rd, err = s.OpenSnapshot(ctx, upTo)
	} else {
		rd, err = t.src.Open(ctx, start)
	}
	if err != nil {
		return err
	}
	defer rd.Close()
	for last || !covers(rd.Position(), upTo) {
		m, err := rd.Next(ctx)
		switch {
		case last && errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return err
		case m.Partition < len(upTo) && m.Offset >= upTo[m.Partition]:
			continue // the live reader's, which it writes itself
		}
		op, ok := t.op(&m, t.tr.event("", &m, nil))
		if !ok {
			continue
		}
		g.write(op)
		if t.over(len(g.index), g.bytes) {
			return errSnapshotOver
		}
		*g = *g.compacted()
	}
	return nil
}

// finish makes g, with the live reader's writes meanwhile, the table of
// build, if it is still the current one; nil drops the table.
func (t *snapTable) finish(build uint64, g *snapGen) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if build != t.build {
		return
	}
	if g != nil {
		for _, op := range t.pending {
			g.write(op)
		}
		g = g.compacted()
	}
	t.pending, t.pendBy = nil, 0
	if g == nil || t.over(len(g.index), g.bytes) {
		t.drop()
	} else {
		t.state, t.gen = snapReady, g
		t.logger.Info("snapshot table built", "route", t.path, "keys", len(g.index), "bytes", g.bytes)
	}
	close(t.ready)
}

// over reports whether a table of keys and bytes is past the bounds.
func (t *snapTable) over(keys int, bytes int64) bool {
	return keys > t.maxKeys || bytes > t.maxBytes
}

// drop drops the table, over its bounds, for good (until the stream is
// read again from its start). t.mu must be held.
func (t *snapTable) drop() {
	t.state, t.gen, t.pending, t.pendBy = snapOver, nil, nil, 0
	t.logger.Warn("snapshot table over its bounds: dropped, snapshots refused; raise snapshot_max_keys or snapshot_max_bytes",
		"route", t.path, "snapshot_max_keys", t.maxKeys, "snapshot_max_bytes", t.maxBytes)
}

// op returns the table's write for m, whose event (ID aside) is ev, and
// whether m has a key.
func (t *snapTable) op(m *Message, ev esource.Event) (snapOp, bool) {
	key, ok := t.tr.snapshotKey(m)
	if !ok {
		return snapOp{}, false
	}
	if ev.Type == DeleteType {
		return snapOp{key: string(key), del: true}, true
	}
	ev.ID, ev.Labels = "", nil // view=snapshot takes no filter
	enc, err := esource.Encode(ev, nil)
	if err != nil {
		return snapOp{}, false // the live reader logs it
	}
	return snapOp{key: string(key), ev: enc}, true
}

// apply writes the live reader's message m, published as ev.
func (t *snapTable) apply(m *Message, ev esource.Event) {
	op, ok := t.op(m, ev)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.id = ev.ID
	if !ok {
		return
	}
	switch t.state {
	case snapBuilding:
		t.pending = append(t.pending, op)
		t.pendBy += int64(len(op.key) + op.ev.Len() + snapshotEntryOverhead)
		if t.pendBy > t.maxBytes || len(t.pending) > 2*t.maxKeys {
			// The build cannot end within the bounds.
			t.build++
			t.cancel()
			t.drop()
			close(t.ready)
		}
	case snapReady:
		t.gen.write(op)
		if t.over(len(t.gen.index), t.gen.bytes) {
			t.drop()
			return
		}
		t.gen = t.gen.compacted()
	}
}

// A snapView is a snapshot as of one write: what a client is sent.
type snapView struct {
	entries []*snapEntry
	clock   uint64
	id      string // of the position it was taken at
}

// view returns the table's snapshot as of now, the state, and, while the
// table is built, a channel closed once it is.
func (t *snapTable) view() (snapView, int, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch t.state {
	case snapReady:
		return snapView{entries: t.gen.entries, clock: t.gen.clock, id: t.id}, snapReady, nil
	case snapBuilding:
		return snapView{}, snapBuilding, t.ready
	}
	return snapView{id: t.id}, snapOver, nil
}

// send sends rp the snapshot: begin, the entries, end. It returns the
// number of keys sent.
func (v *snapView) send(rp *esource.Replay, reason string) (int, error) {
	if err := rp.Send(esource.Event{Type: SnapshotBeginType, Data: map[string]string{"reason": reason}}); err != nil {
		return 0, err
	}
	n := 0
	for _, e := range v.entries {
		if d := e.dead.Load(); d != 0 && d <= v.clock {
			continue
		}
		if err := rp.SendEncoded(e.ev); err != nil {
			return n, err
		}
		n++
	}
	return n, rp.Send(esource.Event{ID: v.id, Type: SnapshotEndType, Data: map[string]int{"keys": n}})
}

// SnapshotStats are the figures of a route's snapshot table.
type SnapshotStats struct {
	// Ready reports whether the table is built and within its bounds.
	Ready bool
	// Over reports whether the table grew past its bounds: it was
	// dropped, and snapshots are refused.
	Over bool
	// Keys and Bytes are the table's keys and the bytes counted against
	// its bound: keys, encoded events, and 128 bytes a key.
	Keys  int
	Bytes int64
	// Served counts the snapshots sent; Refused those refused, the table
	// being over its bounds.
	Served, Refused uint64
}

// stats returns the table's figures.
func (t *snapTable) stats() *SnapshotStats {
	t.mu.Lock()
	st := &SnapshotStats{Ready: t.state == snapReady, Over: t.state == snapOver}
	if t.gen != nil {
		st.Keys, st.Bytes = len(t.gen.index), t.gen.bytes
	}
	t.mu.Unlock()
	st.Served, st.Refused = t.served.Load(), t.refused.Load()
	return st
}

// errSnapshotExpired tells that a client of the snapshot view lost
// messages to retention: it gets a fresh snapshot rather than a gap.
var errSnapshotExpired = errors.New("bridge: position expired, for a snapshot view")

// snapshotStart returns the start of a client that asks for a snapshot.
func snapshotStart() esource.Start {
	return esource.Start{LastEventID: snapshotMarker, Position: &eventID{kind: kindSnapshot}}
}

// sendSnapshot sends rp a snapshot, waiting with heartbeats for the table
// to be built, and returns where the client stands after it: the
// position it was taken at. A table over its bounds is refused with a gap
// event (reason "snapshot-refused") at the live reader's position.
func (r *route) sendSnapshot(ctx context.Context, rp *esource.Replay, reason string) (*eventID, error) {
	for {
		v, state, ready := r.snap.view()
		switch state {
		case snapBuilding:
			if err := rp.Wait(ctx, ready); err != nil {
				return nil, err
			}
			continue
		case snapOver:
			r.snap.refused.Add(1)
			gap := esource.Gap{Reason: "snapshot-refused", Message: fmt.Sprintf(
				"the route's snapshot table is over its bounds (snapshot_max_keys=%d, snapshot_max_bytes=%d); the stream goes on", r.snap.maxKeys, r.snap.maxBytes)}
			if err := rp.Send(gap.Event(v.id)); err != nil {
				return nil, err
			}
		default:
			if _, err := v.send(rp, reason); err != nil {
				return nil, err
			}
			r.snap.served.Add(1)
		}
		if v.id == "" {
			return nil, errors.New("bridge: the live reader's position is unknown")
		}
		at, err := r.codec().decode(v.id)
		if err != nil {
			return nil, err
		}
		if at.kind == kindOrigin {
			at.pos = Position{}
		}
		at.heal = true
		// Into the log at once where it holds the position: no broker
		// reader for a crowd of snapshots.
		return &at, rp.Flush()
	}
}

// replayView sends rp what follows pos, as replay does; for a client of
// the snapshot view, a snapshot first (pos of kindSnapshot), and a fresh
// one, rather than a gap, where the broker no longer holds what the
// client was to be sent.
func (r *route) replayView(ctx context.Context, rp *esource.Replay, pos *eventID) error {
	reason := "new"
	for {
		if pos.kind == kindSnapshot {
			var err error
			if pos, err = r.sendSnapshot(ctx, rp, reason); err != nil {
				return err
			}
		}
		err := r.replay(ctx, rp, pos)
		if !errors.Is(err, errSnapshotExpired) {
			return err
		}
		pos, reason = &eventID{kind: kindSnapshot}, "expired"
	}
}

// viewOf returns the view a client asks for in q: "" or "snapshot", or
// why the route cannot serve it.
func (r *route) viewOf(q map[string][]string, f esource.Filter) (string, error) {
	vs := q["view"]
	switch {
	case len(vs) == 0:
		return "", nil
	case len(vs) > 1 || vs[0] != "snapshot":
		return "", errors.New("esbridge: view: want snapshot")
	case r.snap == nil:
		return "", errors.New("esbridge: this route has no snapshot view (its snapshot option is not set)")
	case f != nil:
		return "", errors.New("esbridge: view=snapshot takes no subject or key filter")
	}
	return "snapshot", nil
}
