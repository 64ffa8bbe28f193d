package nats

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
)

// Config configures a [Source]. It maps one to one to the URL forms of
// [ParseURL].
type Config struct {
	// Servers are the NATS servers, each "HOST:PORT" (the port defaults
	// to 4222). At least one is required.
	Servers []string

	// Stream is the JetStream stream to read. Empty means core NATS.
	Stream string

	// Subject is the subject to subscribe to with core NATS (required;
	// the wildcards * and > are allowed), or the subject filter of the
	// JetStream stream (empty means every message of the stream).
	Subject string

	// User and Password authenticate with a user name and password.
	User, Password string
	// Token authenticates with a token.
	Token string
	// Creds is a user credentials file (JWT and NKey seed).
	Creds string
	// NKey is an NKey seed file.
	NKey string

	// TLS makes the connection use TLS, verifying the server against the
	// system roots unless TLSCA is set. Setting TLSCA or TLSCert implies it.
	TLS bool
	// TLSCA is a file of PEM root certificates to verify the server with.
	TLSCA string
	// TLSCert and TLSKey are the files of a client certificate and its key;
	// both or neither must be set.
	TLSCert, TLSKey string

	// Logger receives connection events. Nil means discard.
	Logger *slog.Logger
}

// ParseURL returns the Config of a URL of one of the forms described in
// the package documentation. Its query holds only the options of this
// source; an unknown one is an error that names it.
func ParseURL(u *url.URL) (Config, error) {
	var cfg Config
	jetstream := false
	switch u.Scheme {
	case "nats":
	case "jetstream":
		jetstream = true
	default:
		return cfg, fmt.Errorf("nats: URL scheme %q: want nats or jetstream", u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" {
		return cfg, fmt.Errorf("nats: want %s://HOST:PORT/NAME", u.Scheme)
	}
	cfg.Servers = strings.Split(u.Host, ",")
	if u.User != nil {
		cfg.User = u.User.Username()
		cfg.Password, _ = u.User.Password()
	}
	name := strings.TrimPrefix(u.Path, "/")
	if jetstream {
		cfg.Stream = name
	} else {
		cfg.Subject = name
	}

	q, err := brokerurl.Query(u.RawQuery)
	if err != nil {
		return cfg, fmt.Errorf("nats: %w", err)
	}
	for _, k := range slices.Sorted(maps.Keys(q)) {
		v := q[k]
		switch k {
		case "subject":
			if !jetstream {
				return cfg, fmt.Errorf("nats: URL query parameter %q is for jetstream URLs; the subject of a nats URL is its path", k)
			}
			cfg.Subject = v
		case "token":
			cfg.Token = v
		case "creds":
			cfg.Creds = v
		case "nkey":
			cfg.NKey = v
		case "tls":
			cfg.TLS, err = strconv.ParseBool(v)
			if err != nil {
				return cfg, fmt.Errorf("nats: URL query parameter tls=%q: want true or false", v)
			}
		case "tls_ca":
			cfg.TLSCA = v
		case "tls_cert":
			cfg.TLSCert = v
		case "tls_key":
			cfg.TLSKey = v
		default:
			return cfg, fmt.Errorf("nats: unknown URL query parameter %q", k)
		}
	}
	return cfg, cfg.validate()
}

// validate reports the first problem of cfg, without touching files.
func (cfg *Config) validate() error {
	if len(cfg.Servers) == 0 {
		return errors.New("nats: no server")
	}
	for _, s := range cfg.Servers {
		if err := brokerurl.Addr(s, false); err != nil {
			return fmt.Errorf("nats: server %q: %w", s, err)
		}
	}
	if cfg.Stream != "" {
		if strings.ContainsAny(cfg.Stream, ".*>/\\ \t\r\n") {
			return fmt.Errorf("nats: stream name %q: must not contain '.', '*', '>', '/', '\\' or white space", cfg.Stream)
		}
		if cfg.Subject != "" && !validSubject(cfg.Subject) {
			return fmt.Errorf("nats: subject filter %q is not a valid subject", cfg.Subject)
		}
	} else if cfg.Subject == "" {
		return errors.New("nats: no subject and no stream")
	} else if !validSubject(cfg.Subject) {
		return fmt.Errorf("nats: subject %q is not a valid subject", cfg.Subject)
	}
	auth := 0
	for _, s := range []string{cfg.User, cfg.Token, cfg.Creds, cfg.NKey} {
		if s != "" {
			auth++
		}
	}
	if auth > 1 {
		return errors.New("nats: give at most one of user, token, creds and nkey")
	}
	if cfg.Password != "" && cfg.User == "" {
		return errors.New("nats: password without user")
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return errors.New("nats: tls_cert and tls_key go together")
	}
	return nil
}

// validSubject reports whether s is a subject: dot-separated non-empty
// tokens without white space, where * and > stand alone and > comes last.
func validSubject(s string) bool {
	if strings.ContainsAny(s, " \t\r\n") {
		return false
	}
	tokens := strings.Split(s, ".")
	for i, t := range tokens {
		switch {
		case t == "":
			return false
		case t == ">" && i != len(tokens)-1:
			return false
		case len(t) > 1 && strings.ContainsAny(t, "*>"):
			return false
		}
	}
	return true
}
