package bridge

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/esbridge/esbridge/esource"
)

// A Headed is a Source that can tell where its stream ends on the broker,
// so that [Bridge.Stats] can say how far each route's live reader is
// behind. Sources whose broker has no cheap way to tell leave it out.
type Headed interface {
	// Head returns the stream's head: for each partition, the offset
	// after the last message the broker holds (the Kafka high-water
	// mark, the JetStream last sequence + 1). ctx bounds the request.
	Head(ctx context.Context) (Position, error)
}

// Bounds of the look-ups of a stream's head by Stats.
const (
	// lagInterval is how long a route's lag is kept: however often Stats
	// is called, a route's broker is asked at most once per interval.
	lagInterval = time.Second
	// lagTimeout bounds a look-up of a stream's head.
	lagTimeout = 2 * time.Second
)

// RouteStats are a route's figures, as [Bridge.Stats] reads them.
type RouteStats struct {
	// Path is the route's path; Stream its source's stream (Info.Stream).
	Path, Stream string
	// Ready reports whether the route's source is connected and its live
	// reader open, as /readyz tells.
	Ready bool
	// CatchUpReaders is the number of catch-up readers open.
	CatchUpReaders int
	// CatchUpWaiting is the number of clients waiting for a catch-up
	// reader, the route having as many as it may.
	CatchUpWaiting int
	// Stats are the counters of the route's event source: clients, events
	// published, bytes sent, replays, slow clients, gap events.
	esource.Stats
	// Lag is how many messages the live reader is behind the broker's
	// head, summed over the partitions, when LagKnown: the route's source
	// is a [Headed], it is ready, and the broker answered.
	Lag      uint64
	LagKnown bool
	// Snapshot are the figures of the route's snapshot table; nil for a
	// route without a snapshot view.
	Snapshot *SnapshotStats
	// Partitions are the figures of each partition of the live reader's
	// position, for a source with history, by partition: a route may
	// serve while some of them do not.
	Partitions []PartitionStats
}

// PartitionStats are a figures of one partition of a route's stream.
type PartitionStats struct {
	Partition int
	// Stalled is how long the live reader has been failing to read the
	// partition (its source is a [Staller]); 0 while it reads it.
	Stalled time.Duration
	// StallError is the last failure of a stalled partition.
	StallError error
	// LastRead is when the live reader was first seen past its last
	// message of the partition, by Stats (so to within the time between
	// two calls); when Stats first saw the route, if it has read none
	// since.
	LastRead time.Time
	// Lag is how many messages the live reader is behind the partition's
	// head, when LagKnown (see RouteStats.Lag).
	Lag      uint64
	LagKnown bool
}

// readTimes tells when the live reader last moved in each partition, as
// successive calls of Stats see its position.
type readTimes struct {
	mu   sync.Mutex
	pos  Position
	read []time.Time
}

// update records pos, seen at now, and returns when the reader last
// moved in each partition.
func (rt *readTimes) update(pos Position, now time.Time) []time.Time {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for p, o := range pos {
		switch {
		case p >= len(rt.read):
			rt.read = append(rt.read, now)
		case p >= len(rt.pos) || rt.pos[p] != o:
			rt.read[p] = now
		}
	}
	rt.pos = slices.Clone(pos)
	return slices.Clone(rt.read[:len(pos)])
}

// lagCache keeps a route's last lag, so that the broker is asked at most
// once per lagInterval.
type lagCache struct {
	mu    sync.Mutex // held during the look-up: callers meanwhile wait for it
	at    time.Time  // when it was looked up; zero: never
	lags  []uint64   // by partition
	known bool
}

// Stats returns the figures of every route, in the order of the routes
// given to New. A route whose source is a [Headed] has its lag looked up,
// at most once a second, all routes at once, each bounded by ctx and a
// short timeout; in between, the last lag is returned.
func (b *Bridge) Stats(ctx context.Context) []RouteStats {
	stats := make([]RouteStats, len(b.order))
	var wg sync.WaitGroup
	for i, r := range b.order {
		r.catchUps.mu.Lock()
		readers := len(r.catchUps.readers)
		r.catchUps.mu.Unlock()
		stats[i] = RouteStats{
			Path:           r.path,
			Stream:         r.info.Stream,
			Ready:          r.isReady(),
			CatchUpReaders: readers,
			CatchUpWaiting: int(r.catchUps.waiting.Load()),
			Stats:          r.es.Stats(),
		}
		if r.snap != nil {
			stats[i].Snapshot = r.snap.stats()
		}
		if _, ok := r.src.(Headed); ok {
			wg.Go(func() {
				lags, known := r.lag(ctx)
				stats[i].LagKnown = known
				for _, n := range lags {
					stats[i].Lag += n
				}
				stats[i].Partitions = r.partitionStats(lags, known)
			})
		} else {
			stats[i].Partitions = r.partitionStats(nil, false)
		}
	}
	wg.Wait()
	return stats
}

// partitionStats returns the figures of each partition of the live
// reader's position, lags by partition where known.
func (r *route) partitionStats(lags []uint64, known bool) []PartitionStats {
	pos := r.live.Load()
	if !r.info.History || pos == nil {
		return nil
	}
	now := time.Now()
	read := r.reads.update(*pos, now)
	ps := make([]PartitionStats, len(*pos))
	for p := range ps {
		ps[p] = PartitionStats{Partition: p, LastRead: read[p], LagKnown: known}
		if known && p < len(lags) {
			ps[p].Lag = lags[p]
		}
	}
	for _, st := range r.stalls() {
		if st.Partition >= 0 && st.Partition < len(ps) {
			ps[st.Partition].Stalled = max(now.Sub(st.Since), time.Nanosecond)
			ps[st.Partition].StallError = st.Err
		}
	}
	return ps
}

// lag returns how far the live reader is behind the stream's head in each
// partition, if it can tell; from the cache if it was looked up less than
// lagInterval ago.
func (r *route) lag(ctx context.Context) ([]uint64, bool) {
	h, ok := r.src.(Headed)
	if !ok || !r.isReady() || r.live.Load() == nil {
		return nil, false // a route that is down has no lag to tell, even cached
	}
	c := &r.lagCache
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < lagInterval {
		return c.lags, c.known
	}
	c.lags, c.known = nil, false
	hctx, cancel := context.WithTimeout(ctx, lagTimeout)
	head, err := h.Head(hctx)
	cancel()
	if err != nil {
		r.logger.Debug("the stream's head cannot be read", "route", r.path, "err", err)
	} else {
		// Read after the head: messages read meanwhile are not lag.
		c.lags, c.known = behind(head, *r.live.Load()), true
	}
	c.at = time.Now()
	return c.lags, c.known
}

// behind returns how many offsets pos is behind head in each partition of
// head; a partition pos does not have counts from 0, one it is past (read
// after head was looked up) as 0.
func behind(head, pos Position) []uint64 {
	lags := make([]uint64, len(head))
	for p, h := range head {
		if at := offsetOf(pos, p); h > at {
			lags[p] = h - at
		}
	}
	return lags
}

// maxStallError bounds the error of a stalled partition that ServeReadyz
// shows.
const maxStallError = 200

// clip returns s cut to n bytes, marked with an ellipsis where cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// ServeReadyz answers a readiness check in detail: 200 once every
// route's source is connected, else 503; the body's first line is "ready"
// or "not ready", then a line for each route with its path, its stream,
// whether it is ready, and the partitions its live reader cannot read for
// now, each with how long and why (a route is ready while most of its
// partitions are read). It is for an admin port, when the public /readyz
// says no more than ready or not (Config.TerseReadyz).
func (b *Bridge) ServeReadyz(w http.ResponseWriter, _ *http.Request) {
	var body strings.Builder
	ready := !b.draining.Load()
	if !ready {
		body.WriteString("draining\n")
	}
	now := time.Now()
	for _, r := range b.order {
		state := "ready"
		if !r.isReady() {
			state, ready = "not ready", false
		}
		fmt.Fprintf(&body, "%s %s %s", r.path, r.info.Stream, state)
		if stalls := r.stalls(); len(stalls) > 0 {
			fmt.Fprintf(&body, ", %d partitions stalled:", len(stalls))
			for i, st := range stalls {
				if i > 0 {
					body.WriteByte(',')
				}
				fmt.Fprintf(&body, " %d for %v (%s)", st.Partition, now.Sub(st.Since).Round(time.Millisecond), clip(fmt.Sprint(st.Err), maxStallError))
			}
		}
		body.WriteByte('\n')
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, "not ready\n", body.String())
		return
	}
	fmt.Fprint(w, "ready\n", body.String())
}
