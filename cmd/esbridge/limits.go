package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/limit"
)

// serverFlags are the flags of TLS and limits.
type serverFlags struct {
	tlsCert, tlsKey string
	maxClients      int
	maxPerIP        int
	ipv6Prefix      int
	trustedProxies  prefixFlags
}

// addServerFlags defines the flags of TLS and limits in fs.
func addServerFlags(fs *flag.FlagSet, s *serverFlags) {
	fs.StringVar(&s.tlsCert, "tls-cert", "", "certificate `FILE` (PEM): serve HTTPS and HTTP/2")
	fs.StringVar(&s.tlsKey, "tls-key", "", "key `FILE` (PEM) of -tls-cert")
	fs.IntVar(&s.maxClients, "max-clients", 0, "streams open at once (`N`), 0 for no limit")
	fs.IntVar(&s.maxPerIP, "max-clients-per-ip", 0, "streams open at once per client address (`N`), 0 for no limit")
	fs.IntVar(&s.ipv6Prefix, "ipv6-prefix", limit.DefaultIPv6Prefix, "prefix length (`BITS`, 1 to 128) by which -max-clients-per-ip counts an IPv6 client")
	fs.Var(&s.trustedProxies, "trusted-proxy", "`CIDR` of proxies whose X-Forwarded-For and Forwarded headers are believed (repeatable)")
}

// check checks the flags of TLS and limits. Errors name the flag.
func (s *serverFlags) check() error {
	switch {
	case s.tlsCert != "" && s.tlsKey == "":
		return fmt.Errorf("flag -tls-cert %q needs -tls-key", s.tlsCert)
	case s.tlsKey != "" && s.tlsCert == "":
		return fmt.Errorf("flag -tls-key %q needs -tls-cert", s.tlsKey)
	case s.maxClients < 0:
		return fmt.Errorf("invalid value %d for flag -max-clients: must be 0 (no limit) or more", s.maxClients)
	case s.maxPerIP < 0:
		return fmt.Errorf("invalid value %d for flag -max-clients-per-ip: must be 0 (no limit) or more", s.maxPerIP)
	case s.ipv6Prefix < 1 || s.ipv6Prefix > 128:
		return fmt.Errorf("invalid value %d for flag -ipv6-prefix: must be from 1 to 128", s.ipv6Prefix)
	}
	return nil
}

// limitStreams wraps h with the limits of the flags, if any, counting the
// streams of the route paths only. onRefused, if not nil, is called for
// each stream refused, with limit.ReasonMaxClients or
// limit.ReasonMaxPerIP (for a metric of refusals).
func limitStreams(h http.Handler, s *serverFlags, routes []routeFlag, logger *slog.Logger, onRefused func(reason string)) (http.Handler, error) {
	if s.maxClients == 0 && s.maxPerIP == 0 {
		return h, nil
	}
	paths := make(map[string]bool, len(routes))
	for _, r := range routes {
		paths[r.path] = true
	}
	lim, err := limit.New(limit.Config{
		MaxClients:     s.maxClients,
		MaxPerIP:       s.maxPerIP,
		IPv6Prefix:     s.ipv6Prefix,
		TrustedProxies: s.trustedProxies,
		IsStream:       func(r *http.Request) bool { return paths[r.URL.Path] || r.URL.Path == bridge.StreamsPath },
		OnRefused:      onRefused,
		Logger:         logger,
	})
	if err != nil {
		return nil, err
	}
	return lim.Handler(h), nil
}

// prefixFlags collects the -trusted-proxy flags: CIDR prefixes, or single
// addresses.
type prefixFlags []netip.Prefix

func (p *prefixFlags) String() string {
	s := make([]string, len(*p))
	for i, v := range *p {
		s[i] = v.String()
	}
	return strings.Join(s, ",")
}

func (p *prefixFlags) Set(v string) error {
	var prefix netip.Prefix
	if strings.Contains(v, "/") {
		var err error
		if prefix, err = netip.ParsePrefix(v); err != nil {
			return fmt.Errorf("want a CIDR prefix such as 10.0.0.0/8, or an address")
		}
		prefix = prefix.Masked()
		if a := prefix.Addr(); a.Is4In6() && prefix.Bits() >= 96 {
			prefix = netip.PrefixFrom(a.Unmap(), prefix.Bits()-96)
		}
	} else {
		a, err := netip.ParseAddr(v)
		if err != nil || a.Zone() != "" {
			return fmt.Errorf("want a CIDR prefix such as 10.0.0.0/8, or an address")
		}
		a = a.Unmap()
		prefix = netip.PrefixFrom(a, a.BitLen())
	}
	*p = append(*p, prefix)
	return nil
}
