// Package fakesource is an in-memory stream of several partitions, a
// bridge.Source for tests that need no broker. Like a reader of a real
// broker, each of its readers interleaves the partitions in an order of
// its own. It is for tests only.
package fakesource

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/esbridge/esbridge/bridge"
)

// A Stream is a stream of partitions that only grow. It is safe for
// concurrent use.
type Stream struct {
	name string
	seed uint64

	mu      sync.Mutex
	inc     uint64        // the stream's incarnation
	deleted bool          // the stream does not exist
	parts   [][][]byte    // each partition's messages, by offset
	keys    [][][]byte    // and their keys
	times   [][]time.Time // when each message was stored
	held    chan struct{} // while not nil, readers other than live ones wait for its closing
	lookups int           // calls of PositionAt
	grew    chan struct{} // closed and replaced when a partition grows
	open    int           // readers open
	maxOpen int           // the most readers open at once
	opened  int           // readers opened in all
}

// New returns a stream of partitions, each empty. seed chooses the orders
// in which its readers interleave the partitions.
func New(name string, partitions int, seed uint64) *Stream {
	return &Stream{name: name, seed: seed, inc: 1, parts: make([][][]byte, partitions), keys: make([][][]byte, partitions), times: make([][]time.Time, partitions), grew: make(chan struct{})}
}

// Delete deletes the stream: its readers fail with bridge.ErrReset, and
// Open fails with bridge.ErrUnavailable until Create.
func (s *Stream) Delete() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleted = true
	s.wake()
}

// Create creates the stream again, empty, with partitions partitions: a
// new incarnation.
func (s *Stream) Create(partitions int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleted = false
	s.inc++
	s.parts = make([][][]byte, partitions)
	s.keys = make([][][]byte, partitions)
	s.times = make([][]time.Time, partitions)
	s.wake()
}

// wake wakes the readers. s.mu must be held.
func (s *Stream) wake() {
	close(s.grew)
	s.grew = make(chan struct{})
}

// Append adds a message to partition p, stored now, and returns its
// offset.
func (s *Stream) Append(p int, data []byte) uint64 {
	return s.add(p, nil, time.Now(), data)
}

// AppendKeyed adds a message with a key to partition p, stored now, and
// returns its offset.
func (s *Stream) AppendKeyed(p int, key, data []byte) uint64 {
	return s.add(p, key, time.Now(), data)
}

// AppendAt adds a message to partition p, stored at t, and returns its
// offset.
func (s *Stream) AppendAt(p int, t time.Time, data []byte) uint64 {
	return s.add(p, nil, t, data)
}

func (s *Stream) add(p int, key []byte, t time.Time, data []byte) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.parts[p] = append(s.parts[p], data)
	s.keys[p] = append(s.keys[p], key)
	s.times[p] = append(s.times[p], t)
	s.wake()
	return uint64(len(s.parts[p]) - 1)
}

// PositionAt implements bridge.Seeker: for each partition, the offset of
// its first message stored at or after t, or its length.
func (s *Stream) PositionAt(ctx context.Context, t time.Time) (bridge.Position, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lookups++
	pos := make(bridge.Position, len(s.parts))
	for p, times := range s.times {
		pos[p] = uint64(len(times))
		for off, at := range times {
			if !at.Before(t) {
				pos[p] = uint64(off)
				break
			}
		}
	}
	return pos, nil
}

// Lookups returns how many times PositionAt was called.
func (s *Stream) Lookups() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lookups
}

// Hold makes the readers opened other than live wait before their first
// message, until Release.
func (s *Stream) Hold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held = make(chan struct{})
}

// Release lets the readers that Hold holds go on.
func (s *Stream) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held != nil {
		close(s.held)
		s.held = nil
	}
}

// Lengths returns the number of messages of each partition.
func (s *Stream) Lengths() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := make([]uint64, len(s.parts))
	for p, msgs := range s.parts {
		n[p] = uint64(len(msgs))
	}
	return n
}

// Info describes the stream: it has history, offsets and keys, as Kafka's.
func (s *Stream) Info() bridge.Info {
	return bridge.Info{Stream: "fake/" + s.name, History: true, OffsetName: "offset", Keyed: true}
}

// Open returns a reader from start. A position beyond the end of a
// partition is refused with bridge.ErrAhead, one of more partitions than
// the stream's with an error.
func (s *Stream) Open(ctx context.Context, start bridge.Start) (bridge.Reader, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.deleted {
		return nil, fmt.Errorf("fakesource: stream deleted: %w", bridge.ErrUnavailable)
	}
	next := make(bridge.Position, len(s.parts))
	switch {
	case start.Position != nil:
		if len(start.Position) > len(s.parts) {
			return nil, fmt.Errorf("fakesource: position of %d partitions, the stream has %d: %w", len(start.Position), len(s.parts), bridge.ErrBadPosition)
		}
		for p, off := range start.Position {
			if off > uint64(len(s.parts[p])) {
				return nil, fmt.Errorf("fakesource: partition %d: offset %d: %w", p, off, bridge.ErrAhead)
			}
			next[p] = off
		}
	case start.Earliest:
	default:
		for p := range next {
			next[p] = uint64(len(s.parts[p]))
		}
	}
	s.open++
	s.opened++
	s.maxOpen = max(s.maxOpen, s.open)
	rd := &reader{s: s, inc: s.inc, next: next, rand: rand.New(rand.NewPCG(s.seed, uint64(s.opened)))}
	if !start.Live {
		rd.held = s.held
	}
	return rd, nil
}

// Close does nothing: the stream has no connection.
func (s *Stream) Close() error { return nil }

// Readers returns how many readers are open, the most that were at once,
// and how many were opened in all.
func (s *Stream) Readers() (open, most, all int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open, s.maxOpen, s.opened
}

// A reader reads the partitions, picking at random among those with a
// message to read.
type reader struct {
	s      *Stream
	inc    uint64
	next   bridge.Position
	rand   *rand.Rand
	held   <-chan struct{} // see Stream.Hold
	closed bool
}

func (r *reader) Next(ctx context.Context) (bridge.Message, error) {
	if r.held != nil {
		select {
		case <-r.held:
			r.held = nil
		case <-ctx.Done():
			return bridge.Message{}, ctx.Err()
		}
	}
	for {
		r.s.mu.Lock()
		if r.s.deleted || r.s.inc != r.inc {
			r.s.mu.Unlock()
			return bridge.Message{}, fmt.Errorf("fakesource: %w", bridge.ErrReset)
		}
		var ready []int
		for p, off := range r.next {
			if off < uint64(len(r.s.parts[p])) {
				ready = append(ready, p)
			}
		}
		grew := r.s.grew
		if len(ready) > 0 {
			p := ready[r.rand.IntN(len(ready))]
			m := bridge.Message{Partition: p, Offset: r.next[p], Key: r.s.keys[p][r.next[p]], Time: r.s.times[p][r.next[p]], Data: r.s.parts[p][r.next[p]]}
			r.s.mu.Unlock()
			r.next[p]++
			return m, nil
		}
		r.s.mu.Unlock()
		select {
		case <-grew:
		case <-ctx.Done():
			return bridge.Message{}, ctx.Err()
		}
	}
}

// Incarnation implements bridge.Incarnated: it counts the stream's
// creations.
func (r *reader) Incarnation() uint64 { return r.inc }

func (r *reader) Position() bridge.Position { return append(bridge.Position(nil), r.next...) }

func (r *reader) Close() error {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if !r.closed {
		r.closed = true
		r.s.open--
	}
	return nil
}
