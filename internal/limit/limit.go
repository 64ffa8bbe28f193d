// Package limit bounds the event streams that a server holds open: in all,
// and per client address. A stream over a limit is answered as a browser's
// EventSource understands best: status 200, a retry line with a jittered
// delay of several seconds, and the end of the stream, so that the browser
// comes back later rather than giving up for good (which any other status
// would make it do).
//
// The client address is the connection's remote address, or, only for
// connections from trusted proxies, the one their X-Forwarded-For or
// Forwarded headers name (see [ClientAddr]). The limit per client counts
// an IPv4 client by its address, and an IPv6 client by the prefix of its
// address ([Config.IPv6Prefix], a /64 by default): one host, or one home
// or office network, is given a /64 or more, and can take any address of
// it.
package limit

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of the retry delay sent to a refused client.
const (
	DefaultRetryMin = 5 * time.Second
	DefaultRetryMax = 15 * time.Second
)

// DefaultIPv6Prefix is the prefix length by which IPv6 clients are counted
// unless Config.IPv6Prefix says otherwise: a /64, the least that a host or
// a network is given.
const DefaultIPv6Prefix = 64

// Reasons passed to Config.OnRefused.
const (
	ReasonMaxClients = "max-clients"
	ReasonMaxPerIP   = "max-clients-per-ip"
)

// ErrInvalid is returned, wrapped, by New for a Config it cannot use.
var ErrInvalid = errors.New("limit: invalid config")

// Config configures a Limiter. The zero Config limits nothing.
type Config struct {
	// MaxClients bounds the streams open at once; zero means no bound.
	MaxClients int
	// MaxPerIP bounds the streams open at once per client: per IPv4
	// address, per IPv6 prefix of IPv6Prefix bits. Zero means no bound.
	MaxPerIP int
	// IPv6Prefix is the length of the prefix by which MaxPerIP counts the
	// IPv6 clients: the addresses of one prefix count as one client. Zero
	// means DefaultIPv6Prefix (64); 128 counts each address apart. It must
	// be from 0 to 128.
	IPv6Prefix int
	// TrustedProxies are the addresses whose forwarding headers are
	// believed (see ClientAddr).
	TrustedProxies []netip.Prefix
	// IsStream reports whether a request opens a stream: only those are
	// counted and limited. Nil means every request.
	IsStream func(*http.Request) bool
	// RetryMin and RetryMax bound the delay a refused client is told to
	// wait, drawn uniformly between them for each; zero means
	// DefaultRetryMin and DefaultRetryMax.
	RetryMin, RetryMax time.Duration
	// OnRefused, if not nil, is called for each stream refused, with the
	// limit that refused it: ReasonMaxClients or ReasonMaxPerIP. It is
	// called from the request's goroutine and must not block (a metrics
	// counter, say).
	OnRefused func(reason string)
	// Logger receives a debug line for each stream refused; nil discards.
	Logger *slog.Logger
}

// A Limiter counts open streams and refuses those over its limits. It is
// safe for concurrent use.
type Limiter struct {
	cfg Config

	mu    sync.Mutex
	open  int
	perIP map[netip.Prefix]int // open streams per client (see clientGroup), with MaxPerIP
}

// New returns a Limiter for cfg, or an error wrapping ErrInvalid.
func New(cfg Config) (*Limiter, error) {
	if cfg.RetryMin == 0 {
		cfg.RetryMin = DefaultRetryMin
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = max(DefaultRetryMax, cfg.RetryMin)
	}
	switch {
	case cfg.MaxClients < 0:
		return nil, fmt.Errorf("%w: max clients %d < 0", ErrInvalid, cfg.MaxClients)
	case cfg.MaxPerIP < 0:
		return nil, fmt.Errorf("%w: max clients per IP %d < 0", ErrInvalid, cfg.MaxPerIP)
	case cfg.IPv6Prefix < 0 || cfg.IPv6Prefix > 128:
		return nil, fmt.Errorf("%w: IPv6 prefix length %d, want 1 to 128 (0 for %d)", ErrInvalid, cfg.IPv6Prefix, DefaultIPv6Prefix)
	case cfg.RetryMin < 0 || cfg.RetryMax < cfg.RetryMin:
		return nil, fmt.Errorf("%w: retry delay from %v to %v", ErrInvalid, cfg.RetryMin, cfg.RetryMax)
	}
	if cfg.IPv6Prefix == 0 {
		cfg.IPv6Prefix = DefaultIPv6Prefix
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Limiter{cfg: cfg, perIP: make(map[netip.Prefix]int)}, nil
}

// Open returns how many streams are open.
func (l *Limiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// Handler returns a handler that passes the streams within the limits to
// next, and answers the others with a retry line.
//
// A stream holds its place until next's ServeHTTP returns or, if next
// takes the connection over (http.Hijacker), until next closes the
// connection. The ResponseWriter passed to next unwraps (for
// http.ResponseController) to the one it wraps.
func (l *Limiter) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if l.cfg.IsStream != nil && !l.cfg.IsStream(r) {
			next.ServeHTTP(w, r)
			return
		}
		var ip netip.Prefix
		if l.cfg.MaxPerIP > 0 {
			ip = clientGroup(ClientAddr(r.RemoteAddr, r.Header, l.cfg.TrustedProxies), l.cfg.IPv6Prefix)
		}
		if reason := l.acquire(ip); reason != "" {
			l.refuse(w, r, ip, reason)
			return
		}
		s := &slot{l: l, ip: ip}
		sw := &streamWriter{ResponseWriter: w, slot: s}
		defer func() {
			if !sw.hijacked {
				s.release()
			}
		}()
		next.ServeHTTP(sw, r)
	})
}

// acquire takes a place for a stream of the client ip, or returns the
// limit that refuses it.
func (l *Limiter) acquire(ip netip.Prefix) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.cfg.MaxClients > 0 && l.open >= l.cfg.MaxClients:
		return ReasonMaxClients
	case l.cfg.MaxPerIP > 0 && l.perIP[ip] >= l.cfg.MaxPerIP:
		return ReasonMaxPerIP
	}
	l.open++
	if l.cfg.MaxPerIP > 0 {
		l.perIP[ip]++
	}
	return ""
}

func (l *Limiter) release(ip netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.cfg.MaxPerIP > 0 {
		if n := l.perIP[ip] - 1; n > 0 {
			l.perIP[ip] = n
		} else {
			delete(l.perIP, ip)
		}
	}
}

// refuse answers a stream over a limit: 200, an event stream made of a
// retry line alone, and its end.
func (l *Limiter) refuse(w http.ResponseWriter, r *http.Request, ip netip.Prefix, reason string) {
	if l.cfg.OnRefused != nil {
		l.cfg.OnRefused(reason)
	}
	delay := l.cfg.RetryMin + rand.N(l.cfg.RetryMax-l.cfg.RetryMin+1)
	if l.cfg.Logger.Enabled(r.Context(), slog.LevelDebug) {
		l.cfg.Logger.Debug("stream refused", "reason", reason, "client", ip, "path", r.URL.Path, "retry", delay)
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte("retry: " + strconv.FormatInt(delay.Milliseconds(), 10) + "\n\n"))
	}
}

// A slot is the place of one open stream, released once.
type slot struct {
	l    *Limiter
	ip   netip.Prefix
	done atomic.Bool
}

func (s *slot) release() {
	if s.done.CompareAndSwap(false, true) {
		s.l.release(s.ip)
	}
}

// streamWriter is the ResponseWriter of a stream within the limits: if the
// handler hijacks the connection, the stream's place goes with it, and is
// released when the connection is closed.
type streamWriter struct {
	http.ResponseWriter
	slot     *slot
	hijacked bool // set by the handler's goroutine
}

// Unwrap returns the ResponseWriter wrapped, for http.ResponseController.
func (w *streamWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack takes the connection over, as http.Hijacker. The returned
// connection releases the stream's place when it is closed; over TCP it is
// a *net.TCPConn underneath, so that writes of net.Buffers remain one
// writev.
func (w *streamWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.hijacked = true
	if tcp, ok := conn.(*net.TCPConn); ok {
		return &tcpConn{TCPConn: tcp, slot: w.slot}, brw, nil
	}
	return &anyConn{Conn: conn, slot: w.slot}, brw, nil
}

// tcpConn is a hijacked TCP connection holding a stream's place. It embeds
// *net.TCPConn, not net.Conn, so that it keeps the TCP connection's method
// set, writev included (net.Buffers.WriteTo).
type tcpConn struct {
	*net.TCPConn
	slot *slot
}

func (c *tcpConn) Close() error {
	err := c.TCPConn.Close()
	c.slot.release()
	return err
}

// anyConn is a hijacked connection of another kind (TLS) holding a
// stream's place.
type anyConn struct {
	net.Conn
	slot *slot
}

func (c *anyConn) Close() error {
	err := c.Conn.Close()
	c.slot.release()
	return err
}
