package nats

import (
	"context"
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
	cfg Config
	log *slog.Logger
	nc  *nats.Conn
	js  jetstream.JetStream // nil for core NATS

	mu    sync.Mutex
	cores map[*coreReader]struct{} // open core NATS readers
}

// New validates cfg and returns a Source whose connection is made in the
// background and re-made forever after it drops: New does not wait for the
// server, nor fail when it is down. It fails on a bad configuration or a
// credentials, key or certificate file that cannot be read.
func New(cfg Config) (*Source, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Source{cfg: cfg, log: cfg.Logger, cores: make(map[*coreReader]struct{})}
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
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.TLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	urls := make([]string, len(cfg.Servers))
	for i, h := range cfg.Servers {
		urls[i] = "nats://" + h
	}
	nc, err := nats.Connect(strings.Join(urls, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("nats: connect: %w", err)
	}
	s.nc = nc
	if cfg.Stream != "" {
		if s.js, err = jetstream.New(nc); err != nil {
			nc.Close()
			return nil, fmt.Errorf("nats: %w", err)
		}
	}
	return s, nil
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
// one wrapping [bridge.ErrExpired] for a JetStream position before the
// stream's first sequence. It gives up when ctx ends.
func (s *Source) Open(ctx context.Context, start bridge.Start) (bridge.Reader, error) {
	if s.nc.IsClosed() {
		return nil, fmt.Errorf("nats: %w", nats.ErrConnectionClosed)
	}
	if s.cfg.Stream == "" {
		return s.openCore(ctx, start)
	}
	return s.openStream(ctx, start)
}

// Connected reports whether the connection to the server is up; the bridge
// answers /readyz with it.
func (s *Source) Connected() bool { return s.nc.IsConnected() }

// Close closes the connection. Readers must be closed first. Close is
// idempotent.
func (s *Source) Close() error {
	s.nc.Close()
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
