package bridge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/esbridge/esbridge/esource"
)

// A Route maps an HTTP path to a source's stream.
type Route struct {
	// Path is the URL path the stream is served at, such as "/orders".
	Path string
	// Source is the stream.
	Source Source
	// Options are the route's options.
	Options Options
}

// Config configures a Bridge. The zero Config is valid.
type Config struct {
	// Backlog is how many events each route keeps in memory for clients
	// that resume or fall behind; zero means esource.DefaultBacklog.
	Backlog int
	// Heartbeat is the idle time after which clients get a comment; zero
	// means esource.DefaultHeartbeat. One longer than
	// esource.MaxHeartbeat(esource.DefaultWriteTimeout) is shortened to it.
	Heartbeat time.Duration
	// ConnTakeover makes HTTP/1.x streams take their connections over
	// from net/http (see esource.WithConnTakeover), for a smaller cost
	// per idle stream. Middleware around the Bridge must then follow the
	// contract written there.
	ConnTakeover bool
	// Logger receives the bridge's logs; nil discards them.
	Logger *slog.Logger
	// TerseReadyz makes /readyz answer only "ready" or "not ready",
	// naming no route, for a program that serves the details elsewhere
	// (on an admin port, with ServeReadyz). The status is the same.
	TerseReadyz bool
}

// ErrBadRoute is returned by New for a route it cannot serve.
var ErrBadRoute = errors.New("bridge: bad route")

// A Bridge serves routes over HTTP: each route's path streams its source's
// messages as Server-Sent Events, StreamsPath streams several routes on
// one response, /healthz answers 200 while the process
// runs, and /readyz answers 200 once every source is connected (503, with
// the routes that are not, before; only "not ready" with
// Config.TerseReadyz). Stats reads every route's figures, for metrics.
//
// Run reads the sources; ServeHTTP serves clients; Shutdown ends streams.
// All methods are safe for concurrent use.
type Bridge struct {
	routes map[string]*route
	tags   map[string][4]byte // of the routes' paths, in merged IDs
	order  []*route
	logger *slog.Logger
	terse  bool // Config.TerseReadyz
	runMu  sync.Mutex
	// draining is set by Shutdown: /readyz answers 503 from then on, so
	// that a load balancer sends the clients it ends elsewhere.
	draining atomic.Bool
}

// New returns a Bridge for routes. It returns ErrBadRoute, wrapped with the
// path and the reason, for a route it cannot serve.
func New(cfg Config, routes ...Route) (*Bridge, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	b := &Bridge{
		routes: make(map[string]*route),
		tags:   make(map[string][4]byte),
		logger: logger,
		terse:  cfg.TerseReadyz,
	}
	tagged := make(map[[4]byte]string)
	for _, rt := range routes {
		r, err := b.newRoute(cfg, rt)
		if err != nil {
			return nil, fmt.Errorf("%w %q: %w", ErrBadRoute, rt.Path, err)
		}
		tag := pathTag(rt.Path)
		if other, ok := tagged[tag]; ok {
			// One in billions: the parts of merged IDs would be mixed up.
			return nil, fmt.Errorf("%w %q: its path and %q have the same tag in merged event IDs; rename one", ErrBadRoute, rt.Path, other)
		}
		tagged[tag] = rt.Path
		b.tags[rt.Path] = tag
		b.routes[rt.Path] = r
		b.order = append(b.order, r)
	}
	return b, nil
}

func (b *Bridge) newRoute(cfg Config, rt Route) (*route, error) {
	switch {
	case !strings.HasPrefix(rt.Path, "/"):
		return nil, errors.New("path must begin with /")
	case Reserved(rt.Path):
		return nil, fmt.Errorf("the path %s is reserved for esbridge (/healthz, /readyz, and every path under /_)", rt.Path)
	case b.routes[rt.Path] != nil:
		return nil, errors.New("path used twice")
	case rt.Source == nil:
		return nil, errors.New("no source")
	}
	info := rt.Source.Info()
	opts := rt.Options
	if opts.Format == "" {
		opts.Format = FormatRaw
	}
	if opts.Earliest && !info.History {
		return nil, fmt.Errorf("%w: start=earliest needs a source with history, and %s keeps none", ErrBadOption, info.Stream)
	}
	switch {
	case opts.Snapshot != "" && !info.History:
		return nil, fmt.Errorf("%w: snapshot needs a source with history, and %s keeps none", ErrBadOption, info.Stream)
	case opts.Snapshot == SnapshotKey && !info.Keyed:
		return nil, fmt.Errorf("%w: snapshot=key needs a source whose messages have keys (Kafka); use snapshot=subject or snapshot=header:NAME", ErrBadOption)
	}
	opts.SnapshotMaxKeys = cmp.Or(opts.SnapshotMaxKeys, DefaultSnapshotMaxKeys)
	opts.SnapshotMaxBytes = cmp.Or(opts.SnapshotMaxBytes, DefaultSnapshotMaxBytes)
	r := &route{
		path:   rt.Path,
		src:    rt.Source,
		info:   info,
		opts:   opts,
		tr:     translator{opts: opts, info: info},
		epoch:  uint64(rand.Uint32()),
		logger: b.logger,
	}
	c := newCodec(info.Stream)
	r.codecs.Store(&c)
	if opts.Snapshot != "" {
		r.snap = newSnapTable(r)
	}
	r.ctx, r.stop = context.WithCancel(context.Background())
	r.catchUps = newCatchUps(r, cmp.Or(opts.CatchUpReaders, DefaultCatchUpReaders))
	r.sinces = newSinceCache()
	esOpts := []esource.Option{esource.WithLogger(b.logger)}
	if cfg.Backlog > 0 {
		esOpts = append(esOpts, esource.WithBacklog(cfg.Backlog))
	}
	if cfg.Heartbeat > 0 {
		esOpts = append(esOpts, esource.WithHeartbeat(cfg.Heartbeat))
	}
	if info.History {
		esOpts = append(esOpts, esource.WithHistory(r))
	}
	if cfg.ConnTakeover {
		esOpts = append(esOpts, esource.WithConnTakeover())
	}
	es, err := esource.New(esOpts...)
	if err != nil {
		return nil, err
	}
	r.es = es
	return r, nil
}

// Run reads every route's source live until ctx ends, reconnecting with
// backoff, then returns. Run may be called once.
func (b *Bridge) Run(ctx context.Context) error {
	if !b.runMu.TryLock() {
		return errors.New("bridge: Run called twice")
	}
	var wg sync.WaitGroup
	for _, r := range b.order {
		wg.Go(func() { r.run(ctx) })
	}
	wg.Wait()
	return nil
}

// Ready reports whether every route's source is connected: what /readyz
// answers. It is for programs that serve the routes under a mux of their
// own and answer their own readiness checks.
func (b *Bridge) Ready() bool {
	if b.draining.Load() {
		return false
	}
	for _, r := range b.order {
		if !r.isReady() {
			return false
		}
	}
	return true
}

// ServeHTTP serves the routes and the health checks. An unknown path gets
// 404 with a short text.
func (b *Bridge) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Context().Err() != nil {
		// The client is gone (an HTTP/2 stream reset as soon as it was
		// opened, say): the stream would cost its parsing, its client and
		// its garbage for nothing.
		return
	}
	if r := b.routes[req.URL.Path]; r != nil {
		r.ServeHTTP(w, req)
		return
	}
	switch req.URL.Path {
	case StreamsPath:
		b.serveStreams(w, req)
	case "/healthz":
		fmt.Fprintln(w, "ok")
	case "/readyz":
		if b.draining.Load() {
			msg := "not ready: draining"
			if b.terse {
				msg = "not ready"
			}
			http.Error(w, msg, http.StatusServiceUnavailable)
			return
		}
		var waiting []string
		for _, r := range b.order {
			if !r.isReady() {
				waiting = append(waiting, r.path+" ("+r.info.Stream+")")
			}
		}
		switch {
		case len(waiting) > 0 && b.terse:
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		case len(waiting) > 0:
			http.Error(w, "not ready: "+strings.Join(waiting, ", "), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	default:
		http.Error(w, "esbridge: no route at "+req.URL.Path, http.StatusNotFound)
	}
}

// Shutdown ends every stream gracefully, as esource.EventSource.Shutdown
// does: clients get what was published, then a short retry line, so that
// browsers reconnect elsewhere and resume from their IDs. From its start,
// /readyz answers 503 (draining), so that a load balancer sends them to
// another instance. It waits until the streams have ended or ctx ends.
func (b *Bridge) Shutdown(ctx context.Context) error {
	b.draining.Store(true)
	var errs []error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, r := range b.order {
		wg.Go(func() {
			if err := r.es.Shutdown(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			r.stop() // the catch-up readers, once their riders are gone
			r.catchUps.wg.Wait()
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
