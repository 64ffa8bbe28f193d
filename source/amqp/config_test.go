package amqp

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	for _, tt := range []struct {
		url   string
		want  Config
		vhost string
	}{
		{"amqp://guest:guest@127.0.0.1:5672/?stream=orders", Config{URI: "amqp://guest:guest@127.0.0.1:5672/", Stream: "orders"}, "/"},
		{"amqp://h?stream=orders", Config{URI: "amqp://h", Stream: "orders"}, "/"},
		{"amqps://u:p%40ss@h:5671/prod?exchange=events&key=orders.%23", Config{URI: "amqps://u:p%40ss@h:5671/prod", Exchange: "events", Key: "orders.#"}, "prod"},
		{"amqp://h/%2F?exchange=amq.fanout", Config{URI: "amqp://h/%2F", Exchange: "amq.fanout"}, "/"},
		{"amqp://h/v?queue=work&prefetch=10", Config{URI: "amqp://h/v", Queue: "work", Prefetch: 10}, "v"},
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
			if v := got.vhost(); v != tt.vhost {
				t.Errorf("vhost %q, want %q", v, tt.vhost)
			}
		})
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, tt := range []struct {
		url, err string // err is part of the error message
	}{
		{"http://h/?stream=s", `scheme "http"`},
		{"amqp:s", "want amqp://"},
		{"amqp://h/", "no stream, exchange or queue"},
		{"amqp://h/?stream=s&queue=q", "only one of stream, exchange and queue"},
		{"amqp://h/?stream=s&key=k", "key is the binding key of an exchange"},
		{"amqp://h/?stream=s&stream=t", `"stream" given 2 times`},
		{"amqp://h/?queue=q&prefetch=0", "prefetch"},
		{"amqp://h/?queue=q&prefetch=x", "prefetch"},
		{"amqp://h/?queue=q&prefetch=70000", "prefetch"},
		{"amqp://h/?queue=q&start=earliest", `unknown URL query parameter "start"`},
		{"amqp://h:70000/?queue=q", `port "70000"`},
		{"amqp://:5672/?queue=q", "empty host"},
		{"amqp://a:5672,b:5672/?queue=q", `host "a:5672,b"`},
		{"amqp://h/?stream=s&key=", `"key" has no value`},
		{"amqp://h/?queue=" + strings.Repeat("q", 256), "255 bytes"},
		{"amqp://h/" + strings.Repeat("v", 256) + "?queue=q", "255 bytes"},
	} {
		t.Run(tt.url, func(t *testing.T) {
			u, err := url.Parse(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			_, err = ParseURL(u)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("error %v; want one containing %q", err, tt.err)
			}
		})
	}
}
