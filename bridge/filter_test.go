package bridge

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestParseFilter(t *testing.T) {
	nats := Info{Stream: "nats/orders.>", Subject: "orders.>"}
	js := Info{Stream: "jetstream/ORDERS", History: true, Subject: ">"}
	kafka := Info{Stream: "kafka/orders", History: true, Keyed: true}
	long := strings.Repeat("x", maxFilterValueLen+1)
	many := "type=" + strings.Repeat("a&type=", maxFilterValues) + "a"
	for _, tc := range []struct {
		info    Info
		query   string
		refused string // a part of the reason; empty if accepted
	}{
		{nats, "", ""},
		{nats, "lastEventId=x&since=1h", ""},
		{nats, "subject=orders.eu.*", ""},
		{nats, "subject=orders.>", ""},
		{nats, "subject=orders.*.paid", ""},
		{js, "subject=payments.>", ""},
		{nats, "subject=payments.>", "not within the route's subject"},
		{nats, "subject=orders", "not within"},
		{nats, "subject=>", "not within"},
		{nats, "subject=orders..eu", "empty token"},
		{nats, "subject=orders.e*", "whole token"},
		{nats, "subject=orders.>.eu", "last token"},
		{nats, "subject=orders.a&subject=orders.b", "one subject"},
		{nats, "subject=", "empty subject"},
		{nats, "key=k1", "no keys"},
		{kafka, "subject=orders.>", "no NATS subjects"},
		{kafka, "key=k1&key=k2&type=order", ""},
		{kafka, "type=", "want an event type"},
		{kafka, "key=" + long, "longer than 256 bytes"},
		{kafka, many, "more than 16 type"},
		{kafka, "key=%ff", "not UTF-8"},
	} {
		t.Run(tc.query, func(t *testing.T) {
			q, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			_, err = parseFilter(q, tc.info)
			switch {
			case tc.refused == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.refused != "" && (!errors.Is(err, ErrBadFilter) || !strings.Contains(err.Error(), tc.refused)):
				t.Errorf("got %v, want a refusal saying %q", err, tc.refused)
			case err != nil && strings.Contains(err.Error(), long):
				t.Errorf("the reason echoes the client's input whole: %.80s…", err)
			}
		})
	}
}

func TestFilterMatch(t *testing.T) {
	q, _ := url.ParseQuery("subject=orders.*.paid&type=message&type=refund&key=k1")
	f, err := parseFilter(q, Info{Subject: "orders.>", Keyed: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		typ, subject, key string
		want              bool
	}{
		{"", "orders.eu.paid", "k1", true},
		{"refund", "orders.us.paid", "k1", true},
		{"other", "orders.eu.paid", "k1", false},
		{"", "orders.eu.paid", "k2", false},
		{"", "orders.eu.sent", "k1", false},
		{"", "orders.eu.paid.x", "k1", false},
		{"", "orders.paid", "k1", false},
		{"", "orders..paid", "k1", false},
	} {
		if got := f.Match(tc.typ, []string{tc.subject, tc.key}); got != tc.want {
			t.Errorf("type %q subject %q key %q: %v, want %v", tc.typ, tc.subject, tc.key, got, tc.want)
		}
	}
	for _, tc := range []struct {
		pattern, subject string
		want             bool
	}{
		{">", "a", true}, {">", "a.b", true}, {"a.>", "a", false}, {"a.>", "a.b.c", true},
		{"*", "a", true}, {"*", "a.b", false}, {"a.*", "a.b", true}, {"a.*.c", "a.b.c", true},
	} {
		p, _ := subjectTokens(tc.pattern)
		if got := subjectMatches(p, tc.subject); got != tc.want {
			t.Errorf("%q matches %q: %v, want %v", tc.pattern, tc.subject, got, tc.want)
		}
	}
}

// stubSource is a source that is never read: for requests alone.
type stubSource struct{ info Info }

func (s stubSource) Info() Info { return s.info }
func (s stubSource) Open(context.Context, Start) (Reader, error) {
	return nil, ErrUnavailable
}
func (s stubSource) Close() error { return nil }

// FuzzFilterQuery: whatever the query string, a stream request is answered
// 200, or 400 with a short reason; never a panic.
func FuzzFilterQuery(f *testing.F) {
	for _, q := range []string{"", "subject=orders.*", "key=a&key=b&type=t", "subject=a..b", "type=%ff", "subject=>&key=" + strings.Repeat("k", 300)} {
		f.Add(q)
	}
	b, err := New(Config{}, Route{Path: "/s", Source: stubSource{Info{Stream: "stub", History: true, Subject: "orders.>", Keyed: true}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { b.Shutdown(context.Background()) })
	f.Fuzz(func(t *testing.T, query string) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // the stream ends after its first frame
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/s", nil)
		req.URL.RawQuery = query
		rec := httptest.NewRecorder()
		b.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
		case http.StatusBadRequest:
			body := rec.Body.String()
			if !strings.HasPrefix(body, "bridge: bad filter: ") || len(body) > 300 {
				t.Errorf("400 with %q, want a short reason", body)
			}
		default:
			t.Errorf("status %d", rec.Code)
		}
	})
}
