package nats

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/sharedcheck"
)

// flushTimeout bounds the round trip that makes sure a new subscription is
// in place on the server, when the context of Open has no earlier deadline.
const flushTimeout = 10 * time.Second

// pingInterval is how often a connection pings the server. One whose
// server stopped answering without closing it (a peer gone, a network
// that drops every packet) is found dead when a ping finds two before it
// unanswered (nats.go's MaxPingsOut): within 15 s, as a RabbitMQ
// connection with its heartbeats, rather than the 4 to 6 minutes of
// nats.go's default interval (2 minutes), during which /readyz said
// ready (TestBrokerFaults/core/hang in cmd/esbridge).
const pingInterval = 5 * time.Second

// A Source is a core NATS subject or a JetStream stream. It implements
// [bridge.Source], [bridge.Connectivity], [bridge.Headed] (a JetStream
// stream's head) and [bridge.Subjected] (a JetStream stream's subjects),
// and is safe for concurrent use: any number of readers may
// be open on it at once. A core NATS source reads through one connection; a
// JetStream source has a second one for the readers that replay history
// (see the package documentation).
type Source struct {
	cfg  Config
	log  *slog.Logger
	url  string        // the servers, for nats.Connect
	opts []nats.Option // the options of both connections

	// Set by New, changed by tests only, before the first Open.
	replayOpts []nats.Option // more options of the replay connection
	inactive   time.Duration // InactiveThreshold of the consumers

	start sync.Once     // starts connect, at the first Open
	tried chan struct{} // closed when connect returned
	live  *conn         // set before tried is closed; nil if connect failed
	// replay reads history, apart from the live reader: JetStream only,
	// else nil. Set with live.
	replay *conn
	err    error // connect's error

	// streamCheck reads the JetStream stream's info for the readers, once
	// a watchInterval for all of them.
	streamCheck sharedcheck.Check[streamInfo]

	// subjects are the JetStream stream's subjects, as the last read of
	// its info told (see StreamSubjects); nil before.
	subjects atomic.Pointer[[]string]

	mu      sync.Mutex
	cores   map[*coreReader]struct{} // open core NATS readers
	closed  bool                     // Close was called: opening takes no more
	opening sync.WaitGroup           // consumers being created, see openStream
}

// A conn is one of the connections of a Source.
type conn struct {
	role string // "live" or "replay", for the logs and the connection name
	nc   *nats.Conn
	js   jetstream.JetStream // nil for core NATS

	mu         sync.Mutex
	current    context.Context    // the session: see session
	endSession context.CancelFunc // ends current
}

// session returns a context that ends when the connection has reconnected
// after the call: the JetStream readers then re-create their consumers at
// once, at the sequence after the last message they returned, rather than
// after missed heartbeats, since a consumer (which has one replica) may
// have been on the server that was lost.
func (c *conn) session() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.current == nil {
		c.current, c.endSession = context.WithCancel(context.Background())
	}
	return c.current
}

// reconnected ends the session and begins the next; nats.go calls it
// (through its ReconnectHandler) once it has reconnected.
func (c *conn) reconnected() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.endSession != nil {
		c.endSession()
	}
	c.current, c.endSession = context.WithCancel(context.Background())
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
	s.streamCheck.Interval = watchInterval
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	opts := []nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.RetryOnFailedConnect(true),
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(2),
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

// connect makes the connections, which nats.go then keeps up by itself:
// the live one, and for a JetStream stream the replay one.
func (s *Source) connect() {
	defer close(s.tried)
	live, err := s.dial("live", s.disconnected)
	if err != nil {
		s.err = err
		return
	}
	if s.cfg.Stream != "" {
		replay, err := s.dial("replay", func(nc *nats.Conn, err error) {
			if !nc.IsClosed() {
				s.log.Warn("nats: disconnected", "conn", "replay", "err", err)
			}
		}, s.replayOpts...)
		if err != nil {
			live.nc.Close()
			s.err = err
			return
		}
		s.replay = replay
	}
	s.live = live
}

// dial makes the connection of role.
func (s *Source) dial(role string, disconnected nats.ConnErrHandler, more ...nats.Option) (*conn, error) {
	name := "esbridge"
	if role != "live" {
		name += "-" + role
	}
	c := &conn{role: role}
	opts := append(slices.Clip(s.opts),
		nats.Name(name),
		nats.DisconnectErrHandler(disconnected),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			s.log.Info("nats: reconnected", "conn", role, "server", nc.ConnectedUrlRedacted())
			c.reconnected()
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			s.log.Warn("nats: asynchronous error", "conn", role, "subject", subject, "err", err)
		}),
	)
	nc, err := nats.Connect(s.url, append(opts, more...)...)
	if err != nil {
		return nil, fmt.Errorf("nats: connect: %w", err)
	}
	c.nc = nc
	if s.cfg.Stream != "" {
		if c.js, err = jetstream.New(nc); err != nil {
			nc.Close()
			return nil, fmt.Errorf("nats: %w", err)
		}
	}
	return c, nil
}

// conn returns the live connection, or nil before it is made or if it
// could not be.
func (s *Source) conn() *nats.Conn {
	select {
	case <-s.tried:
		if s.live != nil {
			return s.live.nc
		}
	default:
	}
	return nil
}

// Info describes the stream: "nats/SUBJECT" without history, or
// "jetstream/STREAM" (with "?subject=FILTER" when filtered) with history
// and offsets named "sequence"; clients may filter within its subject.
func (s *Source) Info() bridge.Info {
	if s.cfg.Stream == "" {
		return bridge.Info{Stream: "nats/" + s.cfg.Subject, Subject: s.cfg.Subject}
	}
	name, subject := "jetstream/"+s.cfg.Stream, ">"
	if s.cfg.Subject != "" {
		name += "?subject=" + s.cfg.Subject
		subject = s.cfg.Subject
	}
	return bridge.Info{Stream: name, History: true, Partitions: 1, FirstOffset: 1, OffsetName: "sequence", Subject: subject}
}

// StreamSubjects implements [bridge.Subjected]: the JetStream stream's
// subjects, as the source last read them from the stream's info, which it
// reads when it opens a reader, and once every second while readers are
// open. It returns nil before the first read, for core NATS, and for a
// stream whose messages may have subjects other than its own: a mirror, a
// stream with sources, or one that transforms its subjects. The caller
// must not modify the slice.
func (s *Source) StreamSubjects() []string {
	if p := s.subjects.Load(); p != nil {
		return *p
	}
	return nil
}

// sawStream records what a read of the JetStream stream's info tells of
// its subjects (see StreamSubjects).
func (s *Source) sawStream(info *jetstream.StreamInfo) {
	if info == nil {
		return
	}
	var subjects []string
	if c := info.Config; c.Mirror == nil && len(c.Sources) == 0 && c.SubjectTransform == nil {
		subjects = slices.Clone(c.Subjects)
	}
	if old := s.subjects.Load(); old != nil && slices.Equal(*old, subjects) {
		return
	}
	s.subjects.Store(&subjects)
}

// Open returns a reader from start on, each with its own subscription or
// consumer. It returns an error wrapping [bridge.ErrUnavailable] while the
// source is not connected or the stream does not exist, one wrapping
// [bridge.ErrNoHistory] for a start other than the latest on core NATS, and
// a [*bridge.ExpiredError] for a JetStream position before the stream's
// first sequence, and one wrapping [bridge.ErrAhead] for a position past
// the one after its last. ctx bounds the opening only; the reader lives until
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
	case s.live == nil || s.live.nc.IsClosed(): // nil: closed before the first Open
		return nil, fmt.Errorf("nats: %w", nats.ErrConnectionClosed)
	}
	if s.cfg.Stream == "" {
		return s.openCore(ctx, start)
	}
	return s.openStream(ctx, start)
}

// Connected reports whether the live connection to the server is up (false
// before the first Open); the bridge answers /readyz with it. The replay
// connection of a JetStream source does not count: a replay that cannot
// open fails alone, and its client retries.
func (s *Source) Connected() bool {
	nc := s.conn()
	return nc != nil && nc.IsConnected()
}

// Close closes the connections, once the consumers being created for
// readers whose Open gave up are deleted. Readers must be closed first.
// Close is idempotent.
func (s *Source) Close() error {
	s.start.Do(func() { close(s.tried) }) // never connected
	<-s.tried
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.opening.Wait()
	for _, c := range []*conn{s.live, s.replay} {
		if c != nil {
			c.nc.Close()
		}
	}
	return nil
}

// unavailable returns an error wrapping bridge.ErrUnavailable unless c is
// connected.
func (c *conn) unavailable() error {
	if st := c.nc.Status(); st != nats.CONNECTED {
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
	s.log.Warn("nats: disconnected", "conn", "live", "err", err)
	s.mu.Lock()
	defer s.mu.Unlock()
	for r := range s.cores {
		r.markLost()
	}
}

// Head returns where the JetStream stream ends: the sequence after its
// last message, or on a filtered route the sequence after the last
// message on the route's subject, so that a live reader that has read it
// is 0 behind (the bridge's lag, see [bridge.Headed], then counts the
// sequences of other subjects in between as well). It asks the server
// over the live connection; ctx bounds the request. Core NATS keeps no
// history: Head returns an error wrapping [bridge.ErrNoHistory].
func (s *Source) Head(ctx context.Context) (bridge.Position, error) {
	_, st, err := s.stream(ctx, false)
	if err != nil {
		return nil, err
	}
	if s.cfg.Subject == "" {
		return bridge.Position{st.CachedInfo().State.LastSeq + 1}, nil
	}
	m, err := st.GetLastMsgForSubject(ctx, s.cfg.Subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return bridge.Position{0}, nil // none yet: nothing to be behind
	case err != nil:
		return nil, fmt.Errorf("nats: stream %s: last message on %s: %w", s.cfg.Stream, s.cfg.Subject, err)
	}
	return bridge.Position{m.Sequence + 1}, nil
}

// stream reads the JetStream stream's info over the live connection, or
// the replay one, and returns that connection too. It returns an error wrapping bridge.ErrNoHistory on core
// NATS, and one wrapping bridge.ErrUnavailable before the connection is
// made, while it is down, or while the stream does not exist.
func (s *Source) stream(ctx context.Context, replay bool) (*conn, jetstream.Stream, error) {
	if s.cfg.Stream == "" {
		return nil, nil, fmt.Errorf("nats: %s: %w", s.cfg.Subject, bridge.ErrNoHistory)
	}
	var c *conn
	select {
	case <-s.tried:
		c = s.live
		if replay {
			c = s.replay
		}
	default:
	}
	if c == nil {
		return nil, nil, fmt.Errorf("nats: not connected: %w", bridge.ErrUnavailable)
	}
	if err := c.unavailable(); err != nil {
		return nil, nil, err
	}
	st, err := c.js.Stream(ctx, s.cfg.Stream)
	if err != nil {
		return nil, nil, fmt.Errorf("nats: stream %s: %w: %w", s.cfg.Stream, bridge.ErrUnavailable, err)
	}
	s.sawStream(st.CachedInfo())
	return c, st, nil
}

// PositionAt returns the sequence of the first message of the JetStream
// stream stored at or after t (on the route's subject, if it has one), or
// the sequence after the last message if none is (see [bridge.Seeker]).
// It asks the server for the message by time, over the replay
// connection, which needs NATS Server 2.11 or later. ctx bounds the
// requests. Core NATS keeps no history: PositionAt returns an error
// wrapping [bridge.ErrNoHistory].
func (s *Source) PositionAt(ctx context.Context, t time.Time) (bridge.Position, error) {
	// The last sequence first: a message stored after it is newer than t.
	c, st, err := s.stream(ctx, true)
	if err != nil {
		return nil, err
	}
	head := st.CachedInfo().State.LastSeq + 1
	filter := cmp.Or(s.cfg.Subject, ">")
	req, err := json.Marshal(msgGetRequest{StartTime: &t, NextFor: filter, NoHeaders: true})
	if err != nil {
		return nil, err
	}
	msg, err := c.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+s.cfg.Stream, req)
	if err != nil {
		return nil, fmt.Errorf("nats: stream %s: message at %v: %w: %w", s.cfg.Stream, t, bridge.ErrUnavailable, err)
	}
	var res msgGetResponse
	if err := json.Unmarshal(msg.Data, &res); err != nil {
		return nil, fmt.Errorf("nats: stream %s: message at %v: %w", s.cfg.Stream, t, err)
	}
	switch {
	case res.Error != nil && res.Error.ErrCode == jsNoMessageFound:
		return bridge.Position{head}, nil
	case res.Error != nil && res.Error.ErrCode == jsBadRequest:
		return nil, fmt.Errorf("nats: stream %s: the server cannot find a message by time (NATS Server 2.11 or later can): %s", s.cfg.Stream, res.Error.Description)
	case res.Error != nil:
		return nil, fmt.Errorf("nats: stream %s: message at %v: %s", s.cfg.Stream, t, res.Error.Description)
	case res.Message == nil || res.Message.Seq == 0:
		return nil, fmt.Errorf("nats: stream %s: message at %v: no sequence in the answer", s.cfg.Stream, t)
	}
	return bridge.Position{min(res.Message.Seq, head)}, nil
}

// JetStream API error codes.
const (
	jsBadRequest     = 10003
	jsNoMessageFound = 10037
)

// msgGetRequest asks for a stream's first message at or after StartTime
// on subject NextFor (JetStream's STREAM.MSG.GET).
type msgGetRequest struct {
	StartTime *time.Time `json:"start_time,omitempty"`
	NextFor   string     `json:"next_by_subj,omitempty"`
	NoHeaders bool       `json:"no_hdr,omitempty"`
}

// msgGetResponse is the answer to a msgGetRequest: its message's
// sequence, or an error.
type msgGetResponse struct {
	Error *struct {
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
	Message *struct {
		Seq uint64 `json:"seq"`
	} `json:"message"`
}
