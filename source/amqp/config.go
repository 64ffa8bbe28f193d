package amqp

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/esbridge/esbridge/internal/brokerurl"
	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultPrefetch is how many unacknowledged messages the broker sends a
// reader ahead when [Config.Prefetch] is zero.
const DefaultPrefetch = 1000

// Config configures a [Source]. It maps one to one to the URL forms of
// [ParseURL]: exactly one of Stream, Exchange and Queue is set.
type Config struct {
	// URI is the broker: amqp://USER:PASS@HOST:PORT/VHOST, or amqps://
	// for TLS (verified against the system roots). Missing parts take
	// the AMQP defaults: guest:guest, port 5672 (5671 with TLS), vhost /.
	URI string

	// Stream is a RabbitMQ stream queue, read by offset.
	Stream string

	// Exchange is an exchange to bind a queue of the reader's own to:
	// live only, every reader receives every message.
	Exchange string
	// Key is the binding key of the Exchange; "#" (every message of a
	// topic exchange) when empty. Fanout exchanges ignore it.
	Key string

	// Queue is an existing queue to consume. Readers of the same queue,
	// in this process or another, share its messages.
	Queue string

	// Prefetch is the number of unacknowledged messages the broker sends
	// a reader ahead. Zero means [DefaultPrefetch].
	Prefetch int

	// Logger receives connection events. Nil means discard.
	Logger *slog.Logger
}

// ParseURL returns the Config of a URL of one of the forms described in
// the package documentation. Its query holds only the options of this
// source; an unknown one is an error that names it.
func ParseURL(u *url.URL) (Config, error) {
	var cfg Config
	if u.Scheme != "amqp" && u.Scheme != "amqps" {
		return cfg, fmt.Errorf("amqp: URL scheme %q: want amqp or amqps", u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" {
		return cfg, fmt.Errorf("amqp: want %s://[USER:PASS@]HOST:PORT/VHOST?stream=NAME (or exchange=NAME, or queue=NAME)", u.Scheme)
	}
	q, err := brokerurl.Query(u.RawQuery)
	if err != nil {
		return cfg, fmt.Errorf("amqp: %w", err)
	}
	for _, k := range slices.Sorted(maps.Keys(q)) {
		v := q[k]
		switch k {
		case "stream":
			cfg.Stream = v
		case "exchange":
			cfg.Exchange = v
		case "key":
			cfg.Key = v
		case "queue":
			cfg.Queue = v
		case "prefetch":
			cfg.Prefetch, err = strconv.Atoi(v)
			if err != nil || cfg.Prefetch < 1 || cfg.Prefetch > 65535 {
				return cfg, fmt.Errorf("amqp: URL query parameter prefetch=%q: want a count from 1 to 65535", v)
			}
		default:
			return cfg, fmt.Errorf("amqp: unknown URL query parameter %q", k)
		}
	}
	broker := *u
	broker.RawQuery = ""
	broker.Fragment = ""
	cfg.URI = broker.String()
	return cfg, cfg.validate()
}

// validate reports the first problem of cfg.
func (cfg *Config) validate() error {
	// The host is checked first: amqp.ParseURI takes an empty one for
	// localhost, and any port that fits 32 bits.
	u, err := url.Parse(cfg.URI)
	if err != nil {
		return errors.New("amqp: the broker URI cannot be parsed")
	}
	if err := brokerurl.Addr(u.Host, false); err != nil {
		return fmt.Errorf("amqp: broker: %w", err)
	}
	uri, err := amqp.ParseURI(cfg.URI)
	if err != nil {
		return fmt.Errorf("amqp: broker URI: %w", err)
	}
	named := 0
	for _, s := range []string{cfg.Stream, cfg.Exchange, cfg.Queue} {
		if s != "" {
			named++
		}
	}
	switch {
	case named == 0:
		return errors.New("amqp: no stream, exchange or queue: give one of stream=NAME, exchange=NAME and queue=NAME")
	case named > 1:
		return errors.New("amqp: give only one of stream, exchange and queue")
	case cfg.Key != "" && cfg.Exchange == "":
		return errors.New("amqp: key is the binding key of an exchange: it needs exchange=NAME")
	case cfg.Prefetch < 0 || cfg.Prefetch > 65535:
		return fmt.Errorf("amqp: prefetch %d: want 0 (the default) to 65535", cfg.Prefetch)
	}
	for _, s := range []string{cfg.Stream, cfg.Exchange, cfg.Queue} {
		if strings.ContainsAny(s, "\r\n") {
			return fmt.Errorf("amqp: name %q has a line break", s)
		}
	}
	// AMQP carries these names as short strings, of at most 255 bytes.
	for _, n := range []struct{ what, s string }{{"vhost", uri.Vhost}, {"stream", cfg.Stream}, {"exchange", cfg.Exchange}, {"queue", cfg.Queue}, {"key", cfg.Key}} {
		if len(n.s) > 255 {
			return fmt.Errorf("amqp: %s %.40q... is longer than AMQP's 255 bytes", n.what, n.s)
		}
	}
	return nil
}

// vhost returns the virtual host of the broker URI.
func (cfg *Config) vhost() string {
	u, err := amqp.ParseURI(cfg.URI)
	if err != nil {
		return ""
	}
	return u.Vhost
}

// prefetch returns the prefetch count in effect.
func (cfg *Config) prefetch() int {
	if cfg.Prefetch == 0 {
		return DefaultPrefetch
	}
	return cfg.Prefetch
}

// The kinds of source a Config describes.
type kind int

const (
	kindStream kind = iota
	kindExchange
	kindQueue
)

func (cfg *Config) kind() kind {
	switch {
	case cfg.Stream != "":
		return kindStream
	case cfg.Exchange != "":
		return kindExchange
	default:
		return kindQueue
	}
}

// name names what the source reads, for errors: "stream NAME", "exchange
// NAME" or "queue NAME".
func (cfg *Config) name() string {
	switch cfg.kind() {
	case kindStream:
		return "stream " + cfg.Stream
	case kindExchange:
		return "exchange " + cfg.Exchange
	default:
		return "queue " + cfg.Queue
	}
}

// bindingKey returns the binding key in effect for an exchange.
func (cfg *Config) bindingKey() string {
	if cfg.Key == "" {
		return "#"
	}
	return cfg.Key
}
