package nats

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/esbridge/esbridge/bridge"
)

// A coreReader reads a core NATS subscription.
type coreReader struct {
	src *Source
	sub *nats.Subscription

	mu   sync.Mutex
	lost []int64 // counts of messages received before each outage, ascending

	// Owned by the goroutine calling Next.
	held     *nats.Msg // received, not yet returned
	returned int64     // messages returned by Next
}

func (s *Source) openCore(ctx context.Context, start bridge.Start) (bridge.Reader, error) {
	if start.Position != nil || start.Earliest {
		return nil, fmt.Errorf("nats: subject %s: start at a position: %w", s.cfg.Subject, bridge.ErrNoHistory)
	}
	if err := s.live.unavailable(); err != nil {
		return nil, err
	}
	nc := s.live.nc
	r := &coreReader{src: s}
	// Register first, so that a disconnect during Open is not missed.
	s.mu.Lock()
	s.cores[r] = struct{}{}
	sub, err := nc.SubscribeSync(s.cfg.Subject)
	r.sub = sub
	s.mu.Unlock()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("nats: subscribe %s: %w", s.cfg.Subject, err)
	}
	// Make sure the server has the subscription: messages published after
	// Open returns are read.
	ctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	if err := nc.FlushWithContext(ctx); err != nil {
		r.Close()
		return nil, fmt.Errorf("nats: subscribe %s: %w: %w", s.cfg.Subject, bridge.ErrUnavailable, err)
	}
	return r, nil
}

// markLost records that the messages received so far come before an
// outage. It is called with src.mu held, while the connection is down.
func (r *coreReader) markLost() {
	if r.sub == nil {
		return
	}
	// Received = delivered + pending, read consistently: no message arrives
	// while disconnected, and Next taking one changes Delivered.
	var n int64
	for {
		d1, err1 := r.sub.Delivered()
		p, _, err2 := r.sub.Pending()
		d2, err3 := r.sub.Delivered()
		if err := errors.Join(err1, err2, err3); err != nil {
			return // closed
		}
		if d1 == d2 {
			n = d1 + int64(p)
			break
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lost) == 0 || r.lost[len(r.lost)-1] < n {
		r.lost = append(r.lost, n)
	}
}

// Next returns the next message, or an error wrapping bridge.ErrLost once
// where messages were lost: at a reconnect, or where the client dropped
// messages because the reader was slow.
func (r *coreReader) Next(ctx context.Context) (bridge.Message, error) {
	if r.held == nil {
		m, err := r.sub.NextMsgWithContext(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return bridge.Message{}, ctx.Err()
			}
			if errors.Is(err, nats.ErrSlowConsumer) { // reported once per episode
				return bridge.Message{}, fmt.Errorf("nats: subject %s: reader too slow, messages dropped: %w", r.src.cfg.Subject, bridge.ErrLost)
			}
			return bridge.Message{}, fmt.Errorf("nats: subject %s: %w", r.src.cfg.Subject, err)
		}
		r.held = m
	}
	r.mu.Lock()
	lost := len(r.lost) > 0 && r.lost[0] <= r.returned
	if lost {
		r.lost = r.lost[1:]
	}
	r.mu.Unlock()
	if lost {
		return bridge.Message{}, fmt.Errorf("nats: subject %s: reconnected: %w", r.src.cfg.Subject, bridge.ErrLost)
	}
	m := r.held
	r.held = nil
	r.returned++
	return bridge.Message{Subject: m.Subject, Headers: headers(m.Header), Data: m.Data}, nil
}

// Position returns nil: core NATS keeps no history.
func (r *coreReader) Position() bridge.Position { return nil }

// Close unsubscribes. It is idempotent.
func (r *coreReader) Close() error {
	r.src.mu.Lock()
	delete(r.src.cores, r)
	r.src.mu.Unlock()
	if r.sub != nil {
		if err := r.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrBadSubscription) && !errors.Is(err, nats.ErrConnectionClosed) {
			return fmt.Errorf("nats: unsubscribe %s: %w", r.src.cfg.Subject, err)
		}
	}
	return nil
}

// headers returns h as bridge headers, keys sorted (NATS headers come as a
// map), values in order.
func headers(h nats.Header) []bridge.Header {
	if len(h) == 0 {
		return nil
	}
	var hs []bridge.Header
	for _, k := range slices.Sorted(maps.Keys(h)) {
		for _, v := range h[k] {
			hs = append(hs, bridge.Header{Key: k, Value: v})
		}
	}
	return hs
}
