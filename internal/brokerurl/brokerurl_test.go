package brokerurl

import (
	"strings"
	"testing"
)

func TestAddr(t *testing.T) {
	for _, tt := range []struct {
		addr     string
		needPort bool
		err      string // part of the error; empty for none
	}{
		{"127.0.0.1:9092", true, ""},
		{"127.0.0.1", false, ""},
		{"localhost:1", true, ""},
		{"kafka-0.kafka.svc.cluster.local.:65535", true, ""},
		{"my_broker:4222", true, ""},
		{"[::1]:4222", true, ""},
		{"[fe80::1%eth0]:4222", true, ""},
		{"[::1]", false, ""},
		{"10.1.2.3.example:4222", true, ""}, // a name, not all-numeric at the end
		{"127.0.0.1", true, "no port"},
		{"127.0.0.1:99999", false, `port "99999"`},
		{"127.0.0.1:0", false, `port "0"`},
		{"127.0.0.1:", false, "empty port"},
		{"127.0.0.1:+80", false, `port "+80"`},
		{":9092", false, "empty host"},
		{"", false, "empty host"},
		{"bad host:1", false, "only letters"},
		{"bad!host:1", false, "only letters"},
		{"a..b:1", false, "1 to 63"},
		{"-a.b:1", false, "begins nor ends"},
		{strings.Repeat("a", 64) + ":1", false, "1 to 63"},
		{strings.Repeat("a.", 127) + "a:1", false, "253"},
		{"bücher.example:1", false, "xn--"},
		{"1.2.3.999:1", false, "not an IPv4 address"},
		{"::1:4222", false, "brackets"},
		{"a:5672,b:5672", false, `host "a:5672,b": a name has only`},
		{"[::1:4222", false, "closing ]"},
		{"[127.0.0.1]:1", false, "not an IPv6 address"},
		{"[::1]x", false, "want [ADDRESS]:PORT"},
	} {
		t.Run(tt.addr, func(t *testing.T) {
			err := Addr(tt.addr, tt.needPort)
			switch {
			case tt.err == "" && err != nil:
				t.Errorf("Addr(%q, %v) = %v, want nil", tt.addr, tt.needPort, err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Errorf("Addr(%q, %v) = %v, want an error containing %q", tt.addr, tt.needPort, err, tt.err)
			}
		})
	}
}

func TestQuery(t *testing.T) {
	q, err := Query("a=1&b=x%2By")
	if err != nil || len(q) != 2 || q["a"] != "1" || q["b"] != "x+y" {
		t.Errorf("Query: %v, %v", q, err)
	}
	for _, tt := range []struct{ raw, err string }{
		{"a=1&a=2", `"a" given 2 times`},
		{"token=", `"token" has no value`},
		{"token", `"token" has no value`},
		{"token=s3cr%zzet", "two hexadecimal digits"},
	} {
		_, err := Query(tt.raw)
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("Query(%q) = %v, want an error containing %q", tt.raw, err, tt.err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr") {
			t.Errorf("Query(%q): the error %q shows the value", tt.raw, err)
		}
	}
}
