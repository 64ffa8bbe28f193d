// Command esbridge serves broker streams to browsers as Server-Sent Events.
//
// Usage:
//
//	esbridge -route /orders=jetstream://127.0.0.1:4222/ORDERS [-route ...]
//	esbridge -demo
//
// Each -route maps an HTTP path to a stream URL; see docs/configuration.md
// for the flags, the URL forms and the options. -demo runs an embedded NATS server with a generator of
// live messages, the route /demo, and a page at / that shows it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/esource"
	"github.com/esbridge/esbridge/internal/routeurl"
)

// maxHeaderBytes bounds a request's headers.
const maxHeaderBytes = 64 << 10

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// config is the parsed command line.
type config struct {
	listen    string
	admin     string
	rawRoutes routeFlags
	routes    []routeFlag
	backlog   int
	heartbeat time.Duration
	drain     time.Duration
	logLevel  slog.Level
	logFormat string
	origin    string
	demo      bool
	version   bool
	auth      authFlags
	serverFlags
}

// parseFlags parses args. Errors name the flag and its value.
func parseFlags(args []string) (*config, error) {
	var c config
	fs := newFlagSet(&c)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var err error
	if c.routes, err = c.rawRoutes.parseRoutes(); err != nil {
		return nil, err
	}
	if err := c.auth.check(); err != nil {
		return nil, err
	}
	if err := c.serverFlags.check(); err != nil {
		return nil, err
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected argument %q (routes are given with -route PATH=URL)", fs.Arg(0))
	case c.backlog < 1:
		return nil, fmt.Errorf("invalid value %d for flag -backlog: must be at least 1", c.backlog)
	case c.heartbeat <= 0:
		return nil, fmt.Errorf("invalid value %v for flag -heartbeat: must be positive", c.heartbeat)
	case c.drain <= 0:
		return nil, fmt.Errorf("invalid value %v for flag -drain-timeout: must be positive", c.drain)
	case c.origin != "" && c.origin != "*" && !validOrigin(c.origin):
		return nil, fmt.Errorf("invalid value %q for flag -allow-origin: want * or SCHEME://HOST[:PORT]", c.origin)
	case c.logFormat != "text" && c.logFormat != "json":
		return nil, fmt.Errorf("invalid value %q for flag -log-format: want text or json", c.logFormat)
	case len(c.routes) == 0 && !c.demo && !c.version:
		return nil, errors.New("no -route given (try -route /orders=jetstream://127.0.0.1:4222/ORDERS, or -demo)")
	}
	return &c, nil
}

// newFlagSet defines every flag of the program in a new FlagSet, which
// stores their values in c.
func newFlagSet(c *config) *flag.FlagSet {
	fs := flag.NewFlagSet("esbridge", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.listen, "listen", ":8080", "`ADDR`ess to serve HTTP on")
	fs.StringVar(&c.admin, "admin-listen", "", "`ADDR`ess to serve /metrics, /healthz, /readyz and /debug/pprof/ on")
	fs.Var(&c.rawRoutes, "route", "a route, `PATH=URL` (repeatable)")
	fs.IntVar(&c.backlog, "backlog", esource.DefaultBacklog, "events kept in memory per route (`N`)")
	fs.DurationVar(&c.heartbeat, "heartbeat", 15*time.Second, "idle `DURATION` before a heartbeat comment")
	fs.DurationVar(&c.drain, "drain-timeout", 10*time.Second, "how long shutdown waits for streams to end")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&c.origin, "allow-origin", "", "`ORIGIN` whose pages may read the streams (CORS), or *")
	fs.BoolVar(&c.demo, "demo", false, "run an embedded NATS server with a live demo at /")
	fs.BoolVar(&c.version, "version", false, "print the version and exit")
	c.auth.register(fs)
	addServerFlags(fs, &c.serverFlags)
	return fs
}

// run runs the program with the command line args, and returns its exit
// status: 0, 1 when serving failed, 2 for a bad configuration. -version
// prints to stdout; -h, a bad configuration and the log go to stderr.
func run(args []string, stdout, stderr io.Writer) int {
	c, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stderr, usage())
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "esbridge: %v\n", err)
		return 2
	}
	if c.version {
		fmt.Fprintln(stdout, readBuildInfo())
		return 0
	}
	logger := newLogger(c, stderr)
	certs, err := loadCerts(c, logger)
	if err != nil {
		fmt.Fprintf(stderr, "esbridge: %v\n", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var page http.Handler
	if c.demo {
		d, err := startDemo(ctx, logger)
		if err != nil {
			logger.Error("demo cannot start", "err", err)
			return 1
		}
		defer d.close()
		c.routes = append(c.routes, d.route)
		page = d.page()
	}

	routes, closeSources, err := openRoutes(c.routes, logger)
	if err != nil {
		fmt.Fprintf(stderr, "esbridge: %v\n", err)
		return 2
	}
	defer closeSources()
	b, err := bridge.New(bridge.Config{Backlog: c.backlog, Heartbeat: c.heartbeat, ConnTakeover: true, Logger: logger, TerseReadyz: c.admin != ""}, routes...)
	if err != nil {
		fmt.Fprintf(stderr, "esbridge: invalid value for flag -route: %v\n", err)
		return 2
	}
	m := newMetrics(b)
	authz, err := c.auth.open(logger, m.refused)
	if err != nil {
		fmt.Fprintf(stderr, "esbridge: %v\n", err)
		return 2
	}
	if authz != nil {
		defer authz.Close()
	}

	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		fmt.Fprintf(stderr, "esbridge: invalid value %q for flag -listen: %v\n", c.listen, err)
		return 2
	}
	admin, err := startAdmin(c.admin, b, m, logger)
	if err != nil {
		ln.Close()
		fmt.Fprintf(stderr, "esbridge: %v\n", err)
		return 2
	}
	handler := http.Handler(b)
	if page != nil {
		mux := http.NewServeMux()
		mux.Handle("/{$}", page)
		mux.Handle("/", b)
		handler = mux
	}
	// The limits inside the authorization: only authorized streams take
	// a slot.
	if handler, err = limitStreams(handler, &c.serverFlags, c.routes, logger, func(string) { m.refused(refusedLimit) }); err != nil {
		fmt.Fprintf(stderr, "esbridge: %v\n", err)
		return 2
	}
	if authz != nil {
		// Inside CORS, so that a page of another origin can see a 401.
		protected := protectedPaths(c.routes)
		handler = authz.HandlerFunc(handler, routesOpened(protected))
		logger.Info("authorization on", "routes", len(protected), "public routes", len(c.routes)-len(protected))
	}
	if c.origin != "" {
		handler = allowOrigin(handler, c.origin)
	}
	// Headers are bounded well below net/http's 1 MB: the longest event
	// ID is 13,669 characters, and parsing a megabyte of headers costs the
	// whole process, not only its sender.
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: maxHeaderBytes}
	configureTLS(srv, certs)

	runCtx, stopSources := context.WithCancel(context.Background())
	sourcesDone := make(chan struct{})
	go func() {
		defer close(sourcesDone)
		b.Run(runCtx)
	}()
	serveErr := make(chan error, 1)
	go func() { serveErr <- serve(srv, ln) }()
	logger.Info("esbridge listening", append([]any{"addr", ln.Addr().String(), "routes", len(routes), "tls", certs != nil}, readBuildInfo().logAttrs()...)...)
	if certs != nil {
		logger.Info("TLS certificate loaded", certs.LogAttrs()...)
	}

	status := 0
	select {
	case <-ctx.Done():
		stop() // a second signal ends the process at once
		logger.Info("shutting down: ending streams with a retry hint")
	case err := <-serveErr:
		logger.Error("server failed", "err", err)
		status = 1
	}
	// Streams end first, each with a short retry line, so that browsers
	// reconnect (to another instance, if any) and resume from their IDs.
	drainCtx, cancel := context.WithTimeout(context.Background(), c.drain)
	defer cancel()
	if err := b.Shutdown(drainCtx); err != nil {
		logger.Warn("streams did not all end in time", "err", err)
	}
	if err := srv.Shutdown(drainCtx); err != nil {
		logger.Warn("HTTP server did not stop in time", "err", err)
	}
	admin.close(drainCtx)
	stopSources()
	<-sourcesDone
	return status
}

// validOrigin reports whether s is a web origin: SCHEME://HOST[:PORT].
func validOrigin(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" &&
		u.Path == "" && u.RawQuery == "" && u.Fragment == "" && u.User == nil
}

// allowOrigin lets pages of origin open the streams (CORS), and answers
// preflight requests, which list Last-Event-ID among the headers.
func allowOrigin(h http.Handler, origin string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", origin)
		if origin != "*" {
			w.Header().Add("Vary", "Origin")
		}
		if r.Method == http.MethodOptions {
			w.Header().Set("Access-Control-Allow-Methods", "GET")
			w.Header().Set("Access-Control-Allow-Headers", "Last-Event-ID, Cache-Control")
			w.Header().Set("Access-Control-Max-Age", "86400")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func newLogger(c *config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.logLevel}
	if c.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// usage is the text of -h. Its route examples and URL schemes come from
// routeurl's table.
func usage() string {
	var examples strings.Builder
	for _, s := range routeurl.Schemes() {
		if s.Example != "" {
			fmt.Fprintf(&examples, "                         -route %s\n", s.Example)
		}
	}
	return fmt.Sprintf(usageFormat, examples.String(), esource.DefaultBacklog, routeurl.List())
}

const usageFormat = `Usage: esbridge -route PATH=URL [-route PATH=URL ...] [flags]
       esbridge -demo

Serves broker streams to browsers as Server-Sent Events.

Flags:
  -route PATH=URL      a route (repeatable), e.g.
%s  -listen ADDR         address to serve HTTP on (default :8080)
  -admin-listen ADDR   serve /metrics (Prometheus), /healthz, /readyz with every
                       route's state, and /debug/pprof/ on ADDR; the public
                       /readyz then says only ready or not ready
  -backlog N           events kept in memory per route (default %d)
  -heartbeat DURATION  idle time before a heartbeat comment (default 15s)
  -drain-timeout D     how long shutdown waits for streams to end (default 10s)
  -allow-origin ORIGIN pages of ORIGIN (or *) may open the streams (CORS)
  -tls-cert FILE       certificate (PEM) to serve HTTPS and HTTP/2 with; reloaded
                       when it changes on disk
  -tls-key FILE        its private key (PEM)
  -max-clients N       streams open at once; over it a stream gets a retry
                       line of 5-15 s and ends (default 0: no limit)
  -max-clients-per-ip N  the same per client address (default 0: no limit)
  -ipv6-prefix BITS    an IPv6 client is counted by the prefix of its address
                       of BITS bits (default 64); IPv4, by its address
  -trusted-proxy CIDR  proxies whose X-Forwarded-For or Forwarded header gives
                       the client address (repeatable)
  -log-level LEVEL     debug, info, warn or error (default info)
  -log-format FORMAT   text or json (default text)
  -demo                embedded NATS server, live messages at /demo, a page at /
  -version             print the version and the commit built, and exit

Authorization (JWT; any key flag turns it on for every route):
  -jwt-secret-file FILE      HMAC secret, HS256/384/512 (repeatable)
  -jwt-public-key-file FILE  PEM public key: RSA, ECDSA or Ed25519 (repeatable)
  -jwt-jwks-url URL          JSON Web Key Set; keys chosen by kid, refreshed
  -jwt-issuer ISS            the tokens' iss, checked when given
  -jwt-audience AUD          an aud the tokens must have, checked when given
  -jwt-cookie NAME           cookie of the token (default esbridge_token)
  -jwt-leeway DURATION       clock skew allowed to exp and nbf (default 5s)
  -jwt-allow-no-exp          accept tokens without exp (refused by default)
Tokens come from Authorization: Bearer, the cookie, or ?access_token=; the
claim routes lists the paths they open ("*" for all); a stream ends at exp
plus the leeway.

Route URL schemes: %s.
Route options (URL query): start=latest|earliest, type=subject|header:NAME,
format=raw|envelope, auth=none (a public route). See docs/configuration.md for
every flag, URL form and option.
Several routes on one stream: GET /_streams?route=/a&route=/b. The paths
/healthz, /readyz and every path under /_ are reserved.
`
