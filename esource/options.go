package esource

import (
	"fmt"
	"log/slog"
	"time"
)

// Defaults used by New when no Option says otherwise.
const (
	// DefaultBacklog is the number of events an EventSource keeps in memory
	// for clients that are catching up or resuming.
	DefaultBacklog = 4096

	// DefaultBacklogBytes caps the wire bytes of the kept events.
	DefaultBacklogBytes = 16 << 20

	// DefaultHeartbeat is the idle time after which a comment is sent.
	DefaultHeartbeat = 15 * time.Second

	// DefaultRetry is the reconnection delay sent to clients at connect.
	DefaultRetry = 3 * time.Second

	// DefaultWriteTimeout bounds each write to a client.
	DefaultWriteTimeout = 30 * time.Second

	// DefaultFlushInterval is the longest a published event waits for
	// the clients' earlier writes to end before it wakes the clients
	// that wait (see WithFlushInterval).
	DefaultFlushInterval = 5 * time.Millisecond

	// DefaultProgressInterval is how often, at most, a filtered client
	// that skips events is told the ID of the last one skipped.
	DefaultProgressInterval = time.Second

	// DefaultDrainRetry is the reconnection delay sent to clients when their
	// stream ends at shutdown, before jitter.
	DefaultDrainRetry = time.Second
)

// probeInterval is how often the goroutine of a stream on a taken over
// connection looks whether its client closed it: so that it frees its
// place (and a limit's) within seconds, not at the next heartbeat.
const probeInterval = 5 * time.Second

// An Option configures an EventSource in New.
type Option func(*config) error

type config struct {
	backlog       int
	backlogBytes  int
	heartbeat     time.Duration
	retry         time.Duration
	writeTimeout  time.Duration
	drainRetry    time.Duration
	flushInterval time.Duration
	progress      time.Duration
	probe         time.Duration // how often a client peeks at its connection (see closedByPeer)
	takeover      bool          // HTTP/1.x streams take their connections over
	history       History
	logger        *slog.Logger
}

func defaultConfig() config {
	return config{
		backlog:       DefaultBacklog,
		backlogBytes:  DefaultBacklogBytes,
		heartbeat:     DefaultHeartbeat,
		retry:         DefaultRetry,
		writeTimeout:  DefaultWriteTimeout,
		drainRetry:    DefaultDrainRetry,
		flushInterval: DefaultFlushInterval,
		progress:      DefaultProgressInterval,
		probe:         probeInterval,
		logger:        slog.New(slog.DiscardHandler),
	}
}

// WithBacklog sets how many events are kept in memory (at least 1).
func WithBacklog(events int) Option {
	return func(c *config) error {
		if events < 1 {
			return fmt.Errorf("%w: backlog %d < 1", ErrInvalidOption, events)
		}
		c.backlog = events
		return nil
	}
}

// WithBacklogBytes caps the wire bytes of the events kept in memory,
// counting the copies that registered filters keep of the events they
// pass (see Filter); the newest event is kept whatever its size. Zero
// means no cap beyond the event count.
func WithBacklogBytes(n int) Option {
	return func(c *config) error {
		if n < 0 {
			return fmt.Errorf("%w: backlog bytes %d < 0", ErrInvalidOption, n)
		}
		c.backlogBytes = n
		return nil
	}
}

// WithHeartbeat sets the idle time after which a client is sent a comment,
// which keeps proxies from closing the stream and finds dead connections.
// Zero disables heartbeats. A heartbeat longer than MaxHeartbeat of the
// write timeout is shortened to it.
func WithHeartbeat(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("%w: heartbeat %v < 0", ErrInvalidOption, d)
		}
		c.heartbeat = d
		return nil
	}
}

// WithRetry sets the reconnection delay announced with a retry line when a
// client connects. Zero sends no retry line (browsers then wait about 3 s).
func WithRetry(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("%w: retry %v < 0", ErrInvalidOption, d)
		}
		c.retry = d
		return nil
	}
}

// MaxHeartbeat returns the longest heartbeat interval under a write
// timeout: 3/4 of it. A write moves the write deadline only once an
// eighth of the timeout has passed (moving it costs), so the last write
// before an idle spell may have left the deadline up to 7/8 of the
// timeout ahead; the heartbeat, timed from that write, comes up to a
// tenth of itself late (see wheelStep); and an HTTP/2 stream is reset
// when its deadline passes, written to or not. (Without heartbeats, each
// write to an HTTP/2 stream clears its deadline once done.)
func MaxHeartbeat(writeTimeout time.Duration) time.Duration {
	return writeTimeout - writeTimeout/4
}

// WithWriteTimeout bounds each write to a client; a client that does not
// take its data in that time is disconnected.
func WithWriteTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%w: write timeout %v <= 0", ErrInvalidOption, d)
		}
		c.writeTimeout = d
		return nil
	}
}

// WithDrainRetry sets the reconnection delay sent when a stream ends at
// shutdown. Each client gets it jittered by ±50%, so that browsers do not
// all come back at once.
func WithDrainRetry(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%w: drain retry %v <= 0", ErrInvalidOption, d)
		}
		c.drainRetry = d
		return nil
	}
}

// WithFlushInterval sets the longest a published event waits for the
// clients' earlier writes to end. An event goes out at once while the
// clients keep up: the clients that wait are woken as soon as it is
// published. While clients woken for earlier events are still writing,
// the events published meanwhile are sent together, when the last of
// them has written, so that batches grow with the load, with no fixed
// window; d bounds that wait when a write takes long (a slow client).
// Zero wakes the clients on every event.
func WithFlushInterval(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("%w: flush interval %v < 0", ErrInvalidOption, d)
		}
		c.flushInterval = d
		return nil
	}
}

// WithProgressInterval sets how often, at most, a client whose Filter
// skips events is sent a frame with only the ID of the last event skipped
// (see Filter). Zero sends none: such a client then resumes from the last
// event it was sent, and skips again what followed.
func WithProgressInterval(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("%w: progress interval %v < 0", ErrInvalidOption, d)
		}
		c.progress = d
		return nil
	}
}

// WithHistory sets the hook that serves clients the log cannot: a
// Last-Event-ID the log does not hold, or a client that fell behind the log.
// Without it such clients receive a gap event.
func WithHistory(h History) Option {
	return func(c *config) error {
		c.history = h
		return nil
	}
}

// WithConnTakeover makes each HTTP/1.x stream take its connection over
// from net/http (see http.Hijacker) once the response head is written,
// and be served by a lean goroutine of the EventSource: net/http's
// buffers and goroutine are freed, and an idle stream costs a few
// kilobytes. A client that goes away is then noticed within seconds over
// TCP on Unix systems, where the goroutine peeks at its connection every
// few seconds, and otherwise at the next write, which the heartbeat makes
// happen. HTTP/2 streams, and ResponseWriters that cannot be hijacked,
// are served through the ResponseWriter as without it.
//
// The contract for middleware between the server and the EventSource:
// ServeHTTP returns as soon as the stream is under way, so anything held
// for the stream's life (a place under a connection limit, say) must not
// be released when ServeHTTP returns, but when the connection is closed.
// The stream's context, which the History hook is given, has the
// request's deadline but none of its values: they end with ServeHTTP.
// Such middleware wraps the ResponseWriter with a Hijack method that
// returns a net.Conn whose Close releases it (keeping a *net.TCPConn's
// writev, for speed), and an Unwrap method for http.ResponseController.
// Middleware that writes nothing, or only headers, needs nothing.
func WithConnTakeover() Option {
	return func(c *config) error {
		c.takeover = true
		return nil
	}
}

// WithLogger sets the logger; nil discards.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			l = slog.New(slog.DiscardHandler)
		}
		c.logger = l
		return nil
	}
}
