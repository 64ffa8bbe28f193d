package nats

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	for _, tt := range []struct {
		url  string
		want Config
	}{
		{"nats://127.0.0.1:4222/orders.>", Config{Servers: []string{"127.0.0.1:4222"}, Subject: "orders.>"}},
		{"nats://h/orders.*.created", Config{Servers: []string{"h"}, Subject: "orders.*.created"}},
		{"nats://h/orders.%3E?token=s3cret", Config{Servers: []string{"h"}, Subject: "orders.>", Token: "s3cret"}},
		{"nats://u:p@a:1,b:2/x", Config{Servers: []string{"a:1", "b:2"}, Subject: "x", User: "u", Password: "p"}},
		{"nats://h/x?creds=/etc/u.creds&tls=true", Config{Servers: []string{"h"}, Subject: "x", Creds: "/etc/u.creds", TLS: true}},
		{"nats://h/x?nkey=seed.nk&tls_ca=ca.pem&tls_cert=c.pem&tls_key=k.pem", Config{
			Servers: []string{"h"}, Subject: "x", NKey: "seed.nk", TLSCA: "ca.pem", TLSCert: "c.pem", TLSKey: "k.pem"}},
		{"jetstream://h:4222/ORDERS", Config{Servers: []string{"h:4222"}, Stream: "ORDERS"}},
		{"jetstream://h/ORDERS?subject=orders.eu.>", Config{Servers: []string{"h"}, Stream: "ORDERS", Subject: "orders.eu.>"}},
		{"jetstream://u@h/S?tls=false", Config{Servers: []string{"h"}, Stream: "S", User: "u"}},
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
		})
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, tt := range []struct {
		url, err string // err is part of the error message
	}{
		{"http://h/x", `scheme "http"`},
		{"nats:x", "want nats://HOST:PORT/NAME"},
		{"nats:///x", "want nats://HOST:PORT/NAME"},
		{"nats://h", "no subject"},
		{"nats://h/", "no subject"},
		{"jetstream://h/", "no subject and no stream"},
		{"nats://h/a..b", `subject "a..b"`},
		{"nats://h/a.>.b", `subject "a.>.b"`},
		{"nats://h/a*", `subject "a*"`},
		{"nats://h/a%20b", `subject "a b"`},
		{"jetstream://h/OR.DERS", `stream name "OR.DERS"`},
		{"jetstream://h/A/B", `stream name "A/B"`},
		{"jetstream://h/S?subject=a..", `subject filter "a.."`},
		{"nats://h/x?subject=y", `"subject" is for jetstream URLs`},
		{"nats://h/x?start=earliest", `unknown URL query parameter "start"`},
		{"jetstream://h/S?tls=true&bogus=1", `unknown URL query parameter "bogus"`},
		{"nats://h/x?token=a&token=b", `"token" given 2 times`},
		{"nats://h/x?tls=yes", `tls="yes"`},
		{"nats://h/x?tls_cert=c.pem", "tls_cert and tls_key go together"},
		{"nats://h/x?tls_key=k.pem", "tls_cert and tls_key go together"},
		{"nats://u:p@h/x?token=t", "at most one of user, token, creds and nkey"},
		{"nats://h/x?creds=a&nkey=b", "at most one of user, token, creds and nkey"},
		{"nats://:p@h/x", "password without user"},
		{"nats://a:1,,b:2/x", `server ""`},
		{"nats://a:4222,b:99999/x", `port "99999"`},
		{"nats://:4222/x", "empty host"},
		{"nats://bad!host:4222/x", `host "bad!host"`},
		{"nats://h/x?token=", `"token" has no value`},
		{"nats://h/x?a=%zz", "URL query"},
	} {
		t.Run(tt.url, func(t *testing.T) {
			u, err := url.Parse(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := ParseURL(u)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("ParseURL = %+v, %v; want an error with %q", cfg, err, tt.err)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	for _, cfg := range []Config{
		{},
		{Servers: []string{"127.0.0.1:1"}},
		{Servers: []string{"127.0.0.1:1"}, Subject: "x", Creds: dir + "/missing.creds"},
		{Servers: []string{"127.0.0.1:1"}, Subject: "x", NKey: dir + "/missing.nk"},
		{Servers: []string{"127.0.0.1:1"}, Subject: "x", TLSCA: dir + "/missing.pem"},
		{Servers: []string{"127.0.0.1:1"}, Subject: "x", TLSCert: dir + "/c.pem", TLSKey: dir + "/k.pem"},
	} {
		if s, err := New(cfg); err == nil {
			s.Close()
			t.Errorf("New(%+v) succeeded", cfg)
		} else {
			t.Logf("New: %v", err)
		}
	}
}
