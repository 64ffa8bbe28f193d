package kafka

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseURL(t *testing.T) {
	for _, tt := range []struct {
		url  string
		want Config
	}{
		{"kafka://127.0.0.1:9092/orders", Config{Brokers: []string{"127.0.0.1:9092"}, Topic: "orders"}},
		{"kafka://a:1,b:2,c:3/orders.eu_v-2", Config{Brokers: []string{"a:1", "b:2", "c:3"}, Topic: "orders.eu_v-2"}},
		{"kafka://h:9093/t?tls=true", Config{Brokers: []string{"h:9093"}, Topic: "t", TLS: true}},
		{"kafka://h/t?tls=false", Config{Brokers: []string{"h"}, Topic: "t"}},
		{"kafka://u:p%40ss@h:9092/t?sasl=plain", Config{Brokers: []string{"h:9092"}, Topic: "t", SASL: "plain", User: "u", Password: "p@ss"}},
		{"kafka://u:p@h/t?sasl=scram-sha-256&tls=1", Config{Brokers: []string{"h"}, Topic: "t", SASL: "scram-sha-256", User: "u", Password: "p", TLS: true}},
		{"kafka://u:p@h/t?sasl=scram-sha-512", Config{Brokers: []string{"h"}, Topic: "t", SASL: "scram-sha-512", User: "u", Password: "p"}},
		{"kafka://u@h/t?sasl=plain", Config{Brokers: []string{"h"}, Topic: "t", SASL: "plain", User: "u"}},
		{"kafka://h/t?metadata_interval=250ms", Config{Brokers: []string{"h"}, Topic: "t", MetadataInterval: 250 * time.Millisecond}},
	} {
		t.Run(tt.url, func(t *testing.T) {
			u, err := url.Parse(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseURL(u)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
			if _, err := New(got); err != nil {
				t.Errorf("New: %v", err)
			}
		})
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, tt := range []struct {
		url, err string // err is part of the error message
	}{
		{"http://h/t", `scheme "http"`},
		{"kafka:t", "want kafka://HOST:PORT"},
		{"kafka:///t", "want kafka://HOST:PORT"},
		{"kafka://h", "no topic"},
		{"kafka://h/", "no topic"},
		{"kafka://a,,b/t", `broker ""`},
		{"kafka://127.0.0.1:99999/t", `port "99999"`},
		{"kafka://a:9092,b:0/t", `port "0"`},
		{"kafka://h:/t", "empty port"},
		{"kafka://:9092/t", "empty host"},
		{"kafka://h/t?sasl=", `"sasl" has no value`},
		{"kafka://h/a/b", `topic name "a/b"`},
		{"kafka://h/a%20b", `topic name "a b"`},
		{"kafka://h/..", `topic name ".."`},
		{"kafka://h/" + strings.Repeat("x", 250), "not a legal Kafka topic name"},
		{"kafka://u:p@h/t", "without sasl"},
		{"kafka://h/t?sasl=plain", "sasl=plain without user"},
		{"kafka://u:p@h/t?sasl=gssapi", `sasl="gssapi"`},
		{"kafka://h/t?tls=yes", `tls="yes"`},
		{"kafka://h/t?tls=true&tls=false", `"tls" given 2 times`},
		{"kafka://h/t?metadata_interval=5", `metadata_interval="5"`},
		{"kafka://h/t?metadata_interval=-1s", `metadata_interval="-1s"`},
		{"kafka://h/t?start=earliest", `unknown URL query parameter "start"`},
		{"kafka://h/t?group=g", `unknown URL query parameter "group"`},
		{"kafka://h/t?%zz", "URL query"},
	} {
		t.Run(tt.url, func(t *testing.T) {
			u, err := url.Parse(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			_, err = ParseURL(u)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("err = %v, want one containing %q", err, tt.err)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		err  string
	}{
		{"no broker", Config{Topic: "t"}, "no broker"},
		{"no topic", Config{Brokers: []string{"h:1"}}, "no topic"},
		{"negative interval", Config{Brokers: []string{"h:1"}, Topic: "t", MetadataInterval: -time.Second}, "negative metadata interval"},
		{"password without sasl", Config{Brokers: []string{"h:1"}, Topic: "t", Password: "p"}, "without sasl"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("New = %v, %v; want an error containing %q", s, err, tt.err)
			}
		})
	}
}
