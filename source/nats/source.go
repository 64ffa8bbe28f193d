package nats

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/esbridge/esbridge/bridge"
)

// flushTimeout bounds the round trip that makes sure a new subscription is
// in place on the server, when the context of Open has no earlier deadline.
const flushTimeout = 10 * time.Second

// A Source is a core NATS subject or a JetStream stream, read through one
// connection. It implements [bridge.Source] and is safe for concurrent use:
// any number of readers may be open on it at once.
type Source struct {
	cfg  Config
	log  *slog.Logger
	url  string        // the servers, for nats.Connect
	opts []nats.Option // the connection's options

	inactive time.Duration // InactiveThreshold of the consumers; changed by tests only

	start sync.Once     // starts connect, at the first Open
	tried chan struct{} // closed when connect returned
	nc    *nats.Conn    // set before tried is closed; nil if connect failed
	js    jetstream.JetStream
	err   error // connect's error

	mu      sync.Mutex
	cores   map[*coreReader]struct{} // open core NATS readers
	closed  bool                     // Close was called: opening takes no more
	opening sync.WaitGroup           // consumers being created, see openStream
}

// New validates cfg and returns a Source. It connects to nothing: the
// connection is made at the first Open and re-made forever after it
// drops (see [bridge.Source]). New fails on a bad configuration or a
// credentials, key or certificate file that cannot be read.
func New(cfg Config) (*Source, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Source{cfg: cfg, log: cfg.Logger, tried: make(chan struct{}), cores: make(map[*coreReader]struct{}), inactive: inactiveThreshold}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	opts := []nats.Option{
		nats.Name("esbridge"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(s.disconnected),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			s.log.Info("nats: reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			s.log.Warn("nats: asynchronous error", "subject", subject, "err", err)
		}),
	}
	switch {
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	case cfg.Creds != "":
		// The file is read on each connect; check it now, not forever after.
		if _, err := os.ReadFile(cfg.Creds); err != nil {
			return nil, fmt.Errorf("nats: creds: %w", err)
		}
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	case cfg.NKey != "":
		o, err := nats.NkeyOptionFromSeed(cfg.NKey)
		if err != nil {
			return nil, fmt.Errorf("nats: nkey: %w", err)
		}
		opts = append(opts, o)
	}
	if cfg.TLS {
		opts = append(opts, nats.Secure())
	}
	if cfg.TLSCA != "" {
		// Read on each connect, like the credentials: check them now.
		if _, err := os.ReadFile(cfg.TLSCA); err != nil {
			return nil, fmt.Errorf("nats: tls_ca: %w", err)
		}
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.TLSCert != "" {
		if _, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey); err != nil {
			return nil, fmt.Errorf("nats: tls_cert: %w", err)
		}
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	urls := make([]string, len(cfg.Servers))
	for i, h := range cfg.Servers {
		urls[i] = "nats://" + h
	}
	s.url, s.opts = strings.Join(urls, ","), opts
	return s, nil
}

// connect makes the connection, which nats.go then keeps up by itself.
func (s *Source) connect() {
	defer close(s.tried)
	nc, err := nats.Connect(s.url, s.opts...)
	if err != nil {
		s.err = fmt.Errorf("nats: connect: %w", err)
		return
	}
	if s.cfg.Stream != "" {
		if s.js, err = jetstream.New(nc); err != nil {
			nc.Close()
			s.err = fmt.Errorf("nats: %w", err)
			return
		}
	}
	s.nc = nc
}

// conn returns the connection, or nil before it is made or if it could
// not be.
func (s *Source) conn() *nats.Conn {
	select {
	case <-s.tried:
		return s.nc
	default:
		return nil
	}
}

// Info describes the stream: "nats/SUBJECT" without history, or
// "jetstream/STREAM" (with "?subject=FILTER" when filtered) with history
// and offsets named "sequence".
func (s *Source) Info() bridge.Info {
	if s.cfg.Stream == "" {
		return bridge.Info{Stream: "nats/" + s.cfg.Subject}
	}
	name := "jetstream/" + s.cfg.Stream
	if s.cfg.Subject != "" {
		name += "?subject=" + s.cfg.Subject
	}
	return bridge.Info{Stream: name, History: true, OffsetName: "sequence"}
}

// Open returns a reader from start on, each with its own subscription or
// consumer. It returns an error wrapping [bridge.ErrUnavailable] while the
// source is not connected or the stream does not exist, one wrapping
// [bridge.ErrNoHistory] for a start other than the latest on core NATS, and
// a [*bridge.ExpiredError] for a JetStream position before the stream's
// first sequence. ctx bounds the opening only; the reader lives until
// Close.
func (s *Source) Open(ctx context.Context, start bridge.Start) (bridge.Reader, error) {
	s.start.Do(func() { go s.connect() })
	select { // the first time, for the first attempt
	case <-s.tried:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	switch {
	case s.err != nil:
		return nil, s.err
	case s.nc == nil || s.nc.IsClosed(): // nil: closed before the first Open
		return nil, fmt.Errorf("nats: %w", nats.ErrConnectionClosed)
	}
	if s.cfg.Stream == "" {
		return s.openCore(ctx, start)
	}
	return s.openStream(ctx, start)
}

// Connected reports whether the connection to the server is up (false
// before the first Open); the bridge answers /readyz with it.
func (s *Source) Connected() bool {
	nc := s.conn()
	return nc != nil && nc.IsConnected()
}

// Close closes the connection, once the consumers being created for
// readers whose Open gave up are deleted. Readers must be closed first.
// Close is idempotent.
func (s *Source) Close() error {
	s.start.Do(func() { close(s.tried) }) // never connected
	<-s.tried
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.opening.Wait()
	if s.nc != nil {
		s.nc.Close()
	}
	return nil
}

// unavailable returns an error wrapping bridge.ErrUnavailable unless the
// connection is up.
func (s *Source) unavailable() error {
	if st := s.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("nats: %s: %w", strings.ToLower(st.String()), bridge.ErrUnavailable)
	}
	return nil
}

// disconnected marks, in every core reader, the place in its stream where
// messages were lost. nats.go calls it after the connection dropped, once
// the messages read before are queued, and before it reconnects.
func (s *Source) disconnected(nc *nats.Conn, err error) {
	if nc.IsClosed() {
		return
	}
	s.log.Warn("nats: disconnected", "err", err)
	s.mu.Lock()
	defer s.mu.Unlock()
	for r := range s.cores {
		r.markLost()
	}
}
