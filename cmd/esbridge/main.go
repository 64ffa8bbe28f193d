// Command esbridge serves broker streams to browsers as Server-Sent Events.
//
// Usage:
//
//	esbridge -route /orders=jetstream://127.0.0.1:4222/ORDERS [-route ...]
//	esbridge -demo
//
// Each -route maps an HTTP path to a stream URL; see docs/configuration.md
// for the flags, the URL forms and the options. Every flag can also be set
// by an environment variable, ESBRIDGE_ and its name in upper case with
// "_" for "-" (ESBRIDGE_ROUTE holds routes separated by white space).
// -demo runs an embedded NATS server with a generator of live messages,
// the route /demo, and a page at / that shows it.
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
	os.Exit(run(os.Args[1:], newEnvironment(os.Environ()), os.Stdout, os.Stderr))
}

// config is the parsed command line and environment.
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
	memLimit  byteSize
	auth      authFlags
	serverFlags

	// fromEnv are the flags set by their variables, and envIgnored the
	// variables of flags given on the command line.
	fromEnv    envFlags
	envIgnored []string
}

// parseFlags parses args, and the variables of env for the flags args
// lacks. Errors name the flag and its value, and the variable that set it.
func parseFlags(args []string, env environment) (*config, error) {
	var c config
	fs := newFlagSet(&c, env)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var err error
	if c.fromEnv, c.envIgnored, err = setFromEnv(fs, env); err != nil {
		return nil, err
	}
	if c.version {
		return &c, nil
	}
	if err := c.check(fs, env); err != nil {
		return nil, c.fromEnv.explain(err)
	}
	return &c, nil
}

// check checks the flags, and parses the routes with the ${NAME} of their
// URLs replaced from env.
func (c *config) check(fs *flag.FlagSet, env environment) error {
	var err error
	if c.routes, err = c.rawRoutes.parseRoutes(env); err != nil {
		return err
	}
	if err := c.auth.check(); err != nil {
		return err
	}
	if err := c.serverFlags.check(); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected argument %q (routes are given with -route PATH=URL)", fs.Arg(0))
	case c.backlog < 1:
		return fmt.Errorf("invalid value %d for flag -backlog: must be at least 1", c.backlog)
	case c.heartbeat <= 0:
		return fmt.Errorf("invalid value %v for flag -heartbeat: must be positive", c.heartbeat)
	case c.drain <= 0:
		return fmt.Errorf("invalid value %v for flag -drain-timeout: must be positive", c.drain)
	case c.origin != "" && c.origin != "*" && !validOrigin(c.origin):
		return fmt.Errorf("invalid value %q for flag -allow-origin: want * or SCHEME://HOST[:PORT]", c.origin)
	case c.logFormat != "text" && c.logFormat != "json":
		return fmt.Errorf("invalid value %q for flag -log-format: want text or json", c.logFormat)
	case len(c.routes) == 0 && !c.demo:
		return errors.New("no -route given (try -route /orders=jetstream://127.0.0.1:4222/ORDERS, or -demo)")
	}
	return nil
}

// newFlagSet defines every flag of the program in a new FlagSet, which
// stores their values in c. The file flags replace the ${NAME} of their
// values from env.
func newFlagSet(c *config, env environment) *flag.FlagSet {
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
	fs.Var(&c.memLimit, "memory-limit", "the Go runtime's soft memory limit, a `SIZE` such as 512MiB")
	c.auth.register(fs)
	addServerFlags(fs, &c.serverFlags)
	expandFileFlags(fs, env)
	return fs
}

// run runs the program with the command line args and the environment
// env, and returns its exit status: 0, 1 when serving failed, 2 for a bad
// configuration. -version prints to stdout; -h, a bad configuration and
// the log go to stderr.
func run(args []string, env environment, stdout, stderr io.Writer) int {
	c, err := parseFlags(args, env)
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
	// bad reports a configuration refused after parsing, naming the
	// variables that set the flags it names.
	bad := func(err error) int {
		fmt.Fprintf(stderr, "esbridge: %v\n", c.fromEnv.explain(err))
		return 2
	}
	logger := newLogger(c, stderr)
	memLimit := chooseMemoryLimit(c.memLimit, env, os.DirFS("/sys/fs/cgroup"))
	memLimit.apply()
	for _, name := range c.envIgnored {
		logger.Info("environment variable ignored: its flag is on the command line", "variable", name)
	}
	certs, err := loadCerts(c, logger)
	if err != nil {
		return bad(err)
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
		return bad(err)
	}
	defer closeSources()
	b, err := bridge.New(bridge.Config{Backlog: c.backlog, Heartbeat: c.heartbeat, ConnTakeover: true, Logger: logger, TerseReadyz: c.admin != ""}, routes...)
	if err != nil {
		return bad(fmt.Errorf("invalid value for flag -route: %w", err))
	}
	m := newMetrics(b)
	authz, err := c.auth.open(logger, m.refused)
	if err != nil {
		return bad(err)
	}
	if authz != nil {
		defer authz.Close()
	}

	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return bad(fmt.Errorf("invalid value %q for flag -listen: %w", c.listen, err))
	}
	admin, err := startAdmin(c.admin, b, m, logger)
	if err != nil {
		ln.Close()
		return bad(err)
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
		return bad(err)
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
	logger.Info("esbridge listening", append([]any{"addr", ln.Addr().String(), "routes", len(routes), "tls", certs != nil}, append(memLimit.logAttrs(), readBuildInfo().logAttrs()...)...)...)
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
// routeurl's table; the variable beside each flag comes from envName.
func usage() string {
	var examples strings.Builder
	for _, s := range routeurl.Schemes() {
		if s.Example != "" {
			fmt.Fprintf(&examples, "          -route %s\n", s.Example)
		}
	}
	text := fmt.Sprintf(usageFormat, examples.String(), esource.DefaultBacklog, routeurl.List())
	var b strings.Builder
	for line := range strings.Lines(text) {
		// A flag's line, "  -name ARG", gets its variable beside it.
		if name, ok := strings.CutPrefix(line, "  -"); ok {
			name, _, _ = strings.Cut(strings.TrimSpace(name), " ")
			line = fmt.Sprintf("%-30s %s\n", strings.TrimRight(line, "\n"), envName(name))
		}
		b.WriteString(line)
	}
	return b.String()
}

const usageFormat = `Usage: esbridge -route PATH=URL [-route PATH=URL ...] [flags]
       esbridge -demo
       esbridge -version

Serves broker streams to browsers as Server-Sent Events.

Each flag can also be set by the environment variable beside it; the
flag on the command line wins. A variable ESBRIDGE_... that names no flag
stops esbridge. A repeatable flag's variable holds its values separated by
white space (ESBRIDGE_ROUTE is ignored if any -route is given). ${NAME} in
a route URL or in a FILE is replaced by the variable NAME, which must be
set and not empty.

Flags:
  -route PATH=URL
        a route (repeatable), e.g.
%s  -listen ADDR
        address to serve HTTP on (default :8080)
  -admin-listen ADDR
        serve /metrics (Prometheus), /healthz, /readyz with every route's
        state, and /debug/pprof/ on ADDR; the public /readyz then says
        only ready or not ready
  -backlog N
        events kept in memory per route (default %d)
  -heartbeat DURATION
        idle time before a heartbeat comment (default 15s)
  -drain-timeout D
        how long shutdown waits for streams to end (default 10s)
  -allow-origin ORIGIN
        pages of ORIGIN (or *) may open the streams (CORS)
  -tls-cert FILE
        certificate (PEM) to serve HTTPS and HTTP/2 with; reloaded when it
        changes on disk
  -tls-key FILE
        its private key (PEM)
  -max-clients N
        streams open at once; over it a stream gets a retry line of 5-15 s
        and ends (default 0: no limit)
  -max-clients-per-ip N
        the same per client address (default 0: no limit)
  -ipv6-prefix BITS
        an IPv6 client is counted by the prefix of its address of BITS
        bits (default 64); IPv4, by its address
  -trusted-proxy CIDR
        proxies whose X-Forwarded-For or Forwarded header gives the client
        address (repeatable)
  -log-level LEVEL
        debug, info, warn or error (default info)
  -log-format FORMAT
        text or json (default text)
  -demo
        embedded NATS server, live messages at /demo, a page at /
  -version
        print the version, the commit built and whether it was modified,
        and exit
  -memory-limit SIZE
        the Go runtime's soft memory limit, such as 512MiB or 2GiB
        (default: GOMEMLIMIT if set, else 90%% of the container's cgroup
        memory limit, if any)

Authorization (JWT; any key flag turns it on for every route):
  -jwt-secret-file FILE
        HMAC secret, HS256/384/512 (repeatable)
  -jwt-public-key-file FILE
        PEM public key: RSA, ECDSA or Ed25519 (repeatable)
  -jwt-jwks-url URL
        JSON Web Key Set; keys chosen by kid, refreshed
  -jwt-issuer ISS
        the tokens' iss, checked when given
  -jwt-audience AUD
        an aud the tokens must have, checked when given
  -jwt-cookie NAME
        cookie of the token (default esbridge_token)
  -jwt-leeway DURATION
        clock skew allowed to exp and nbf (default 5s)
  -jwt-allow-no-exp
        accept tokens without exp (refused by default)
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
