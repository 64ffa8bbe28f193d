package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/backoff"
)

// Reconnect backoff and connection settings.
const (
	minRedial   = 250 * time.Millisecond
	maxRedial   = 5 * time.Second
	dialTimeout = 10 * time.Second
	heartbeat   = 10 * time.Second
)

// ErrClosed is returned by a Source's readers once it is closed.
var ErrClosed = errors.New("amqp: source closed")

// A Source is a RabbitMQ stream, exchange or queue, read through one
// connection that it keeps up. It implements [bridge.Source] and
// [bridge.Connectivity] and is safe for concurrent use: each reader has a
// channel of its own on the connection. It is not a [bridge.Headed]:
// AMQP 0-9-1 tells no stream's last offset but by reading its last chunk
// (as Open does for a position beyond it), too costly for every metrics
// scrape, so a RabbitMQ route's lag is not reported.
type Source struct {
	cfg    Config
	log    *slog.Logger
	broker string // the broker URI without its password, for logs

	ctx    context.Context // ends when the source is closed
	cancel context.CancelFunc
	start  sync.Once     // starts keepConnected
	tried  chan struct{} // closed after keepConnected's first dial
	done   chan struct{} // closed when keepConnected returns

	mu   sync.Mutex
	conn *amqp.Connection // nil while disconnected
	up   chan struct{}    // closed when conn is set
}

// New validates cfg and returns a Source. Its connection is made in the
// background from the first Open on, and re-made, with backoff, whenever
// it drops: neither New nor Open waits for the broker, nor fails for
// good when it is down.
func New(cfg Config) (*Source, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Source{cfg: cfg, log: cfg.Logger, up: make(chan struct{}), tried: make(chan struct{}), done: make(chan struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if u, err := url.Parse(cfg.URI); err == nil {
		s.broker = u.Redacted()
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Info describes the source. Its Stream names the vhost and the stream,
// exchange (with the binding key) or queue. Only stream queues keep
// history; their offsets are named "offset".
func (s *Source) Info() bridge.Info {
	name := "rabbitmq/" + url.PathEscape(s.cfg.vhost())
	switch {
	case s.cfg.Stream != "":
		return bridge.Info{Stream: name + "/stream/" + s.cfg.Stream, History: true, Partitions: 1, OffsetName: "offset"}
	case s.cfg.Exchange != "":
		return bridge.Info{Stream: name + "/exchange/" + s.cfg.Exchange + "?key=" + s.cfg.bindingKey()}
	default:
		return bridge.Info{Stream: name + "/queue/" + s.cfg.Queue}
	}
}

// Connected reports whether the connection to the broker is up (false
// before the first Open); the bridge answers /readyz with it.
func (s *Source) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn != nil && !s.conn.IsClosed()
}

// Close closes the connection and stops reconnecting. Readers must be
// closed first. Close is idempotent.
func (s *Source) Close() error {
	s.cancel()
	s.start.Do(func() { close(s.tried); close(s.done) }) // never started
	<-s.done
	return nil
}

// keepConnected dials the broker, waits for the connection to drop, and
// dials again, until the source is closed.
func (s *Source) keepConnected() {
	defer close(s.done)
	defer s.triedOnce()
	retry := backoff.Backoff{Min: minRedial, Max: maxRedial}
	connected := false
	for {
		conn, err := amqp.DialConfig(s.cfg.URI, amqp.Config{
			Heartbeat:  heartbeat,
			Locale:     "en_US",
			Dial:       amqp.DefaultDial(dialTimeout),
			Properties: amqp.Table{"connection_name": "esbridge"},
		})
		if err == nil {
			s.setConn(conn)
		}
		s.triedOnce()
		if err != nil {
			s.log.Warn("amqp: cannot connect; retrying", "broker", s.broker, "err", err)
			if !retry.Wait(s.ctx) {
				return
			}
			continue
		}
		retry.Reset()
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		if connected {
			s.log.Info("amqp: reconnected", "broker", s.broker)
		}
		connected = true
		select {
		case err := <-closed:
			s.setConn(nil)
			s.log.Warn("amqp: disconnected", "broker", s.broker, "err", err)
		case <-s.ctx.Done():
			s.setConn(nil)
			conn.Close()
			return
		}
	}
}

// triedOnce tells Open that the first dial is over.
func (s *Source) triedOnce() {
	select {
	case <-s.tried:
	default:
		close(s.tried)
	}
}

// setConn records the connection, or its loss (nil).
func (s *Source) setConn(c *amqp.Connection) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conn = c
	if c != nil {
		close(s.up)
	} else {
		s.up = make(chan struct{})
	}
}

// connection returns the connection, waiting for it until ctx ends or the
// source is closed.
func (s *Source) connection(ctx context.Context) (*amqp.Connection, error) {
	for {
		s.mu.Lock()
		conn, up := s.conn, s.up
		s.mu.Unlock()
		if conn != nil && !conn.IsClosed() {
			return conn, nil
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.ctx.Done():
			return nil, ErrClosed
		}
		if conn != nil {
			// Closed, but keepConnected has not noticed yet.
			select {
			case <-time.After(10 * time.Millisecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
}

// Open returns a reader from start on, with a channel of its own. It
// returns an error wrapping [bridge.ErrUnavailable] while the source is
// not connected or the stream, exchange or queue cannot be consumed, and
// one wrapping [bridge.ErrNoHistory] for a start other than the latest on
// an exchange or a queue. ctx bounds the opening only (the first Open
// waits within it for the first dial); the reader lives until Close.
func (s *Source) Open(ctx context.Context, start bridge.Start) (bridge.Reader, error) {
	s.start.Do(func() { go s.keepConnected() })
	select { // the first time, for the first dial
	case <-s.tried:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	r := &reader{src: s, kind: s.cfg.kind()}
	switch {
	case s.ctx.Err() != nil:
		return nil, ErrClosed
	case r.kind != kindStream && (start.Position != nil || start.Earliest):
		return nil, fmt.Errorf("amqp: %s: start at a position: %w", s.cfg.name(), bridge.ErrNoHistory)
	case start.Position != nil && len(start.Position) != 1:
		return nil, fmt.Errorf("amqp: stream %s: position of %d partitions, want 1: %w", s.cfg.Stream, len(start.Position), bridge.ErrBadPosition)
	case !s.Connected():
		return nil, fmt.Errorf("amqp: %s: not connected: %w", s.cfg.name(), bridge.ErrUnavailable)
	}
	switch {
	case start.Position != nil:
		r.next, r.known = start.Position[0], true
		// RabbitMQ would wait for good at an offset it never issued.
		if ahead, err := r.ahead(ctx, r.next); err != nil {
			return nil, err
		} else if ahead {
			return nil, fmt.Errorf("amqp: stream %s: offset %d is beyond the last message: %w", s.cfg.Stream, r.next, bridge.ErrAhead)
		}
	case start.Earliest:
		r.first = true
	}
	if err := r.subscribe(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// sinceIdle is how long PositionAt waits for a stream's first message at a
// time before it concludes that there is none.
const sinceIdle = 500 * time.Millisecond

// PositionAt returns the offset of the first message RabbitMQ delivers
// from a stream consumed at the timestamp t (see [bridge.Seeker]). The
// broker starts at the first chunk of messages (a batch it stored at
// once) stored at or after t's second, so that the stream may begin with
// a few messages stored up to a second before t. A time before the
// stream's first message gives its first offset; when no message comes
// for a moment, there is none at or after t, and PositionAt returns nil:
// AMQP 0-9-1 tells no stream's head. ctx bounds the look-up. Exchanges
// and queues keep no history: PositionAt returns an error wrapping
// [bridge.ErrNoHistory].
func (s *Source) PositionAt(ctx context.Context, t time.Time) (bridge.Position, error) {
	r := &reader{src: s, kind: s.cfg.kind()}
	if r.kind != kindStream {
		return nil, fmt.Errorf("amqp: %s: start at a time: %w", s.cfg.name(), bridge.ErrNoHistory)
	}
	if !s.Connected() {
		return nil, fmt.Errorf("amqp: %s: not connected: %w", s.cfg.name(), bridge.ErrUnavailable)
	}
	conn, err := s.connection(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil, r.unavailable(err)
	}
	defer ch.Close()
	if err := ch.Qos(1, 0, false); err != nil {
		return nil, r.unavailable(err)
	}
	deliveries, err := ch.Consume(s.cfg.Stream, "", false, false, false, false, amqp.Table{offsetHeader: t.UTC().Truncate(time.Second)})
	if err != nil {
		return nil, r.unavailable(err)
	}
	idle := time.NewTimer(sinceIdle)
	defer idle.Stop()
	select {
	case d, ok := <-deliveries:
		off, isStream := streamOffset(&d)
		if !ok || !isStream {
			return nil, r.unavailable(errors.New("no message with an offset"))
		}
		return bridge.Position{off}, nil
	case <-idle.C:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
