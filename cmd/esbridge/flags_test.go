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
