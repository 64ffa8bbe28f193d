package kafka

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/esbridge/esbridge/internal/brokerurl"
)

// SASL mechanisms of [Config.SASL].
const (
	SASLPlain       = "plain"
	SASLSCRAMSHA256 = "scram-sha-256"
	SASLSCRAMSHA512 = "scram-sha-512"
)

// DefaultMetadataInterval is how often, at most, a reader starts reading
// new partitions when [Config.MetadataInterval] is zero.
const DefaultMetadataInterval = 5 * time.Second

// Config configures a [Source]. It maps one to one to the URL form of
// [ParseURL].
type Config struct {
	// Brokers are the bootstrap brokers, each "HOST:PORT". At least one
	// is required.
	Brokers []string

	// Topic is the topic to read (required).
	Topic string

	// TLS makes the connections use TLS, verifying the brokers against
	// the system roots.
	TLS bool

	// SASL is the SASL mechanism: empty (none), [SASLPlain],
	// [SASLSCRAMSHA256] or [SASLSCRAMSHA512]. User and Password are its
	// credentials; they require it and it requires them.
	SASL           string
	User, Password string

	// MetadataInterval is how often, at most, a reader starts reading
	// partitions added to the topic, and how long kafka-go's transport
	// keeps the metadata it routes offset requests by. Zero means
	// [DefaultMetadataInterval].
	MetadataInterval time.Duration

	// Logger receives connection events and the client's errors. Nil
	// means discard.
	Logger *slog.Logger
}

// ParseURL returns the Config of a URL of the form described in the
// package documentation. Its query holds only the options of this source;
// an unknown one is an error that names it.
func ParseURL(u *url.URL) (Config, error) {
	var cfg Config
	if u.Scheme != "kafka" {
		return cfg, fmt.Errorf("kafka: URL scheme %q: want kafka", u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" {
		return cfg, errors.New("kafka: want kafka://HOST:PORT[,HOST:PORT...]/TOPIC")
	}
	cfg.Brokers = strings.Split(u.Host, ",")
	if u.User != nil {
		cfg.User = u.User.Username()
		cfg.Password, _ = u.User.Password()
	}
	cfg.Topic = strings.TrimPrefix(u.Path, "/")

	q, err := brokerurl.Query(u.RawQuery)
	if err != nil {
		return cfg, fmt.Errorf("kafka: %w", err)
	}
	for _, k := range slices.Sorted(maps.Keys(q)) {
		v := q[k]
		switch k {
		case "tls":
			cfg.TLS, err = strconv.ParseBool(v)
			if err != nil {
				return cfg, fmt.Errorf("kafka: URL query parameter tls=%q: want true or false", v)
			}
		case "sasl":
			cfg.SASL = v
		case "metadata_interval":
			cfg.MetadataInterval, err = time.ParseDuration(v)
			if err != nil || cfg.MetadataInterval <= 0 {
				return cfg, fmt.Errorf("kafka: URL query parameter metadata_interval=%q: want a positive duration such as 5s", v)
			}
		default:
			return cfg, fmt.Errorf("kafka: unknown URL query parameter %q", k)
		}
	}
	return cfg, cfg.validate()
}

// validate reports the first problem of cfg.
func (cfg *Config) validate() error {
	if len(cfg.Brokers) == 0 {
		return errors.New("kafka: no broker")
	}
	for _, b := range cfg.Brokers {
		if err := brokerurl.Addr(b, false); err != nil {
			return fmt.Errorf("kafka: broker %q: %w", b, err)
		}
	}
	if err := validTopic(cfg.Topic); err != nil {
		return err
	}
	switch cfg.SASL {
	case "":
		if cfg.User != "" || cfg.Password != "" {
			return errors.New("kafka: user and password without sasl=plain, scram-sha-256 or scram-sha-512")
		}
	case SASLPlain, SASLSCRAMSHA256, SASLSCRAMSHA512:
		if cfg.User == "" {
			return fmt.Errorf("kafka: sasl=%s without user", cfg.SASL)
		}
	default:
		return fmt.Errorf("kafka: sasl=%q: want plain, scram-sha-256 or scram-sha-512", cfg.SASL)
	}
	if cfg.MetadataInterval < 0 {
		return fmt.Errorf("kafka: negative metadata interval %v", cfg.MetadataInterval)
	}
	return nil
}

// validTopic reports whether t is a legal Kafka topic name: 1 to 249 of
// the characters a-z, A-Z, 0-9, '.', '_' and '-', and neither "." nor "..".
func validTopic(t string) error {
	if t == "" {
		return errors.New("kafka: no topic")
	}
	if len(t) > 249 || t == "." || t == ".." {
		return fmt.Errorf("kafka: topic name %q is not a legal Kafka topic name", t)
	}
	for _, c := range t {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("kafka: topic name %q: only a-z, A-Z, 0-9, '.', '_' and '-' are allowed", t)
		}
	}
	return nil
}
