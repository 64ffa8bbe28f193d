package main

import (
	"strings"
	"testing"
)

// A bad command line ends the program with status 2 and one line on stderr
// that names the flag, before anything listens.
func TestBadFlags(t *testing.T) {
	t.Parallel()
	// A port where no NATS server runs: a valid route does not need one at
	// startup.
	valid := "/a=jetstream://127.0.0.1:" + freePort(t) + "/S"
	cases := []struct {
		name string
		args []string
		flag string // the flag the message must name
	}{
		{"path-without-slash", []string{"-route", "orders=jetstream://x/S"}, "-route"},
		{"no-equals", []string{"-route", "/a"}, "-route"},
		{"kafka-bad-option", []string{"-route", "/a=kafka://127.0.0.1:9092/t?sasl=md5"}, "-route"},
		{"kafka-no-topic", []string{"-route", "/a=kafka://127.0.0.1:9092/"}, "-route"},
		{"amqp-nothing-to-read", []string{"-route", "/a=amqp://127.0.0.1:5672/q"}, "-route"},
		{"amqp-two-things", []string{"-route", "/a=amqp://127.0.0.1:5672/?stream=s&queue=q"}, "-route"},
		{"amqp-history-on-exchange", []string{"-route", "/a=amqp://127.0.0.1:5672/?exchange=e&start=earliest"}, "-route"},
		{"unknown-scheme", []string{"-route", "/a=ftp://x/y"}, "-route"},
		{"no-scheme", []string{"-route", "/a=127.0.0.1:4222/S"}, "-route"},
		{"bad-start", []string{"-route", "/a=jetstream://127.0.0.1:4222/S?start=sometimes"}, "-route"},
		{"unknown-option", []string{"-route", "/a=jetstream://127.0.0.1:4222/S?bogus=1"}, "-route"},
		{"bad-format", []string{"-route", "/a=jetstream://127.0.0.1:4222/S?format=xml"}, "-route"},
		{"bad-snapshot", []string{"-route", "/a=jetstream://127.0.0.1:4222/S?snapshot=value"}, "-route"},
		{"snapshot-on-core", []string{"-route", "/a=nats://127.0.0.1:4222/ticks?snapshot=subject"}, "-route"},
		{"snapshot-key-on-jetstream", []string{"-route", "/a=jetstream://127.0.0.1:4222/S?snapshot=key"}, "-route"},
		{"zero-snapshot-max-keys", []string{"-route", "/a=jetstream://127.0.0.1:4222/S?snapshot=subject&snapshot_max_keys=0"}, "-route"},
		{"bad-snapshot-max-bytes", []string{"-route", "/a=jetstream://127.0.0.1:4222/S?snapshot=subject&snapshot_max_bytes=1GB"}, "-route"},
		{"earliest-on-core", []string{"-route", "/a=nats://127.0.0.1:4222/ticks?start=earliest"}, "-route"},
		{"no-stream", []string{"-route", "/a=jetstream://127.0.0.1:4222/"}, "-route"},
		{"bad-subject", []string{"-route", "/a=nats://127.0.0.1:4222/a..b"}, "-route"},
		{"same-path-twice", []string{"-route", valid, "-route", valid}, "-route"},
		{"reserved-path", []string{"-route", "/healthz=jetstream://127.0.0.1:4222/S"}, "-route"},
		{"negative-backlog", []string{"-route", valid, "-backlog", "-1"}, "-backlog"},
		{"zero-backlog", []string{"-route", valid, "-backlog", "0"}, "-backlog"},
		{"backlog-not-a-number", []string{"-route", valid, "-backlog", "many"}, "-backlog"},
		{"zero-heartbeat", []string{"-route", valid, "-heartbeat", "0s"}, "-heartbeat"},
		{"zero-drain-timeout", []string{"-route", valid, "-drain-timeout", "0s"}, "-drain-timeout"},
		{"memory-limit-in-GB", []string{"-route", valid, "-memory-limit", "1GB"}, "-memory-limit"},
		{"zero-memory-limit", []string{"-route", valid, "-memory-limit", "0"}, "-memory-limit"},
		{"bad-log-format", []string{"-route", valid, "-log-format", "xml"}, "-log-format"},
		{"bad-log-level", []string{"-route", valid, "-log-level", "loud"}, "-log-level"},
		{"bad-listen", []string{"-route", valid, "-listen", "bad:addr:x"}, "-listen"},
		{"unknown-flag", []string{"-route", valid, "-colour"}, "-colour"},
		{"stray-argument", []string{"-route", valid, "extra"}, "-route"},
		{"no-flags", nil, "-route"},
	}
	bin := binary(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startProc(t, bin, tc.args...)
			code := p.Wait(waitFor)
			stderr := p.Output()
			if code != 2 {
				t.Errorf("exit status %d, want 2; stderr:\n%s", code, stderr)
			}
			lines := scanLines(stderr)
			if len(lines) != 1 || !strings.HasSuffix(stderr, "\n") {
				t.Fatalf("stderr is %d lines, want one line:\n%s", len(lines), stderr)
			}
			if !strings.HasPrefix(lines[0], "esbridge: ") || !strings.Contains(lines[0], tc.flag) {
				t.Errorf("stderr %q: want a line beginning with \"esbridge: \" naming %s", lines[0], tc.flag)
			}
			if strings.Contains(stderr, "listening") {
				t.Errorf("the program listened: %s", stderr)
			}
		})
	}
}

// -h prints the usage and exits 0.
func TestHelp(t *testing.T) {
	t.Parallel()
	p := startProc(t, binary(t), "-h")
	if code := p.Wait(waitFor); code != 0 {
		t.Errorf("-h: exit status %d, want 0", code)
	}
	if out := p.Output(); !strings.Contains(out, "-route PATH=URL") {
		t.Errorf("-h printed %q, want the usage", out)
	}
}

// The message about a bad route does not print the route's credentials, a
// password or a token, to stderr (which ends up in logs).
func TestBadRouteHidesCredentials(t *testing.T) {
	t.Parallel()
	for _, route := range []string{
		"/a=jetstream://user:s3cret@127.0.0.1:4222/S?bogus=1",
		"/a=jetstream://127.0.0.1:4222/S?token=s3cret&bogus=1",
		"/a=nats://127.0.0.1:4222/ticks?token=s3cret&format=xml",
		"/a=amqp://user:s3cret@127.0.0.1:5672/t", // no stream, exchange or queue
		"/a=amqps://user:s3cret@127.0.0.1:5671/?queue=q&prefetch=0",
		"/a=kafka://user:s3cret@127.0.0.1:9092/t?sasl=md5",
		"a=nats://user:s3cret@127.0.0.1:4222/t",
	} {
		p := startProc(t, binary(t), "-route", route)
		if code := p.Wait(waitFor); code != 2 {
			t.Errorf("-route %s: exit status %d, want 2", route, code)
		}
		if msg := p.Output(); strings.Contains(msg, "s3cret") {
			t.Errorf("-route %s: the message shows the secret: %s", route, msg)
		}
	}
}

// Every part of a route URL that can be checked without the broker is
// checked at start-up: a URL that could never connect (a port out of
// range, an empty or malformed host, an option given twice or without its
// value, an AMQP name too long for the protocol) stops esbridge with
// status 2 and one line that names the route and the part, rather than
// starting and retrying for ever.
func TestStartupRouteChecks(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, url string
		want      string // the part the line must name
	}{
		{"kafka-port-too-big", "kafka://127.0.0.1:99999/t", `port "99999"`},
		{"kafka-port-zero", "kafka://127.0.0.1:0/t", `port "0"`},
		{"kafka-second-broker-port", "kafka://127.0.0.1:9092,127.0.0.1:70000/t", `port "70000"`},
		{"kafka-empty-port", "kafka://127.0.0.1:/t", "empty port"},
		{"kafka-empty-host", "kafka://:9092/t", "empty host"},
		{"kafka-empty-broker", "kafka://a:9092,,b:9092/t", "empty host"},
		{"kafka-bad-host", "kafka://kafka!1:9092/t", `host "kafka!1"`},
		{"kafka-bad-ipv4", "kafka://10.0.0.256:9092/t", "not an IPv4 address"},
		{"kafka-port-not-a-number", "kafka://127.0.0.1:90x/t", "invalid port"},
		{"nats-port", "nats://127.0.0.1:65536/ticks", `port "65536"`},
		{"jetstream-ipv6-unbracketed", "jetstream://::1:4222/S", "brackets"},
		{"jetstream-bad-host-label", "jetstream://-nats.local:4222/S", "begins nor ends"},
		{"amqp-empty-host", "amqp://guest:guest@:5672/?queue=q", "empty host"},
		{"amqp-port", "amqp://127.0.0.1:70000/?queue=q", `port "70000"`},
		{"amqps-two-hosts", "amqps://a:5671,b:5671/?queue=q", "a name has only"},
		{"amqp-name-too-long", "amqp://127.0.0.1:5672/?queue=" + strings.Repeat("q", 256), "255 bytes"},
		{"empty-token", "nats://127.0.0.1:4222/ticks?token=", `"token" has no value`},
		{"empty-binding-key", "amqp://127.0.0.1:5672/?exchange=e&key=", `"key" has no value`},
		{"source-option-twice", "kafka://127.0.0.1:9092/t?tls=true&tls=false", `"tls" given 2 times`},
		{"route-option-twice", "kafka://127.0.0.1:9092/t?start=earliest&start=latest", "start given 2 times"},
	}
	bin := binary(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			route := "/" + tc.name + "=" + tc.url
			p := startProc(t, bin, "-listen", "127.0.0.1:0", "-route", route)
			code := p.Wait(waitFor)
			out := p.Output()
			lines := scanLines(out)
			if code != 2 || len(lines) != 1 {
				t.Fatalf("exit status %d with %d lines, want 2 and one line:\n%s", code, len(lines), out)
			}
			for _, w := range []string{"-route", "/" + tc.name + "=", tc.want} {
				if !strings.Contains(lines[0], w) {
					t.Errorf("the line does not name %s: %s", w, lines[0])
				}
			}
		})
	}
}
