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
		// The stream's subjects are not known (see TestParseFilterStreamSubjects).
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
			_, err = parseFilter(q, tc.info, nil)
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

// A subject is refused where no subject of the stream can match it, on a
// route read whole and on one with a subject of its own, wildcards on
// either side; it is accepted where one can.
func TestParseFilterStreamSubjects(t *testing.T) {
	whole := Info{Stream: "jetstream/ORDERS", History: true, Subject: ">"}
	own := Info{Stream: "jetstream/ORDERS?subject=*.new", History: true, Subject: "*.new"}
	stream := []string{"orders.>", "*.audit"}
	for _, tc := range []struct {
		info    Info
		subject string
		refused string // a part of the reason; empty if accepted
	}{
		{whole, "orders.eu.new", ""},
		{whole, "orders.*", ""},
		{whole, "orders.>", ""},
		{whole, "x.audit", ""},
		{whole, "*.audit", ""},
		{whole, "*.*.*", ""}, // orders.a.b
		{whole, "*.*", ""},
		{whole, "*", "matches no subject of the stream (orders.>, *.audit)"},
		{whole, "foo.>", ""}, // foo.audit
		{whole, ">", ""},
		{whole, "payments.new", "matches no subject of the stream"},
		{whole, "foo.bar.baz", "matches no subject"},
		{whole, "orders", "matches no subject"},
		{whole, "x.audit.y", "matches no subject"},
		{own, "orders.new", ""},
		{own, "*.new", ""},
		{own, "payments.new", "matches no subject of the stream"},
		{own, "orders.eu", "not within the route's subject *.new"},
		{own, "orders.>", "not within"},
	} {
		t.Run(tc.info.Subject+" "+tc.subject, func(t *testing.T) {
			_, err := parseFilter(url.Values{"subject": {tc.subject}}, tc.info, stream)
			switch {
			case tc.refused == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.refused != "" && (!errors.Is(err, ErrBadFilter) || !strings.Contains(err.Error(), tc.refused)):
				t.Errorf("got %v, want a refusal saying %q", err, tc.refused)
			}
		})
	}
	many := []string{"a.>", "b.>", "c.>", "d.>", "e.>", "f.>"}
	if _, err := parseFilter(url.Values{"subject": {"x.y"}}, whole, many); err == nil || !strings.Contains(err.Error(), "(a.>, b.>, c.>, d.> and 2 more)") {
		t.Errorf("got %v, want a refusal that lists 4 of the 6 subjects", err)
	}
	if _, err := parseFilter(url.Values{"subject": {"x.y"}}, whole, []string{"a.>", "not..read"}); err != nil {
		t.Errorf("a stream subject that cannot be read refused the client: %v", err)
	}
}

// subjectsOverlap agrees with a search for a subject that both patterns
// match, among the subjects of up to 4 tokens of a, b and c, for every
// pair of patterns of up to 3 tokens of a, b, * and >.
func TestSubjectsOverlap(t *testing.T) {
	var patterns [][]string
	var grow func(p []string)
	grow = func(p []string) {
		if len(p) > 0 {
			patterns = append(patterns, p)
		}
		if len(p) == 3 || len(p) > 0 && p[len(p)-1] == ">" {
			return
		}
		for _, tok := range []string{"a", "b", "*", ">"} {
			grow(append(p[:len(p):len(p)], tok))
		}
	}
	grow(nil)
	var subjects []string
	var concrete func(s string, n int)
	concrete = func(s string, n int) {
		if n > 0 {
			subjects = append(subjects, s)
		}
		if n == 4 {
			return
		}
		for _, tok := range []string{"a", "b", "c"} {
			if n == 0 {
				concrete(tok, 1)
			} else {
				concrete(s+"."+tok, n+1)
			}
		}
	}
	concrete("", 0)
	for _, a := range patterns {
		for _, b := range patterns {
			want := false
			for _, s := range subjects {
				if subjectMatches(a, s) && subjectMatches(b, s) {
					want = true
					break
				}
			}
			if got := subjectsOverlap(a, b); got != want {
				t.Errorf("subjectsOverlap(%q, %q) = %v, want %v", strings.Join(a, "."), strings.Join(b, "."), got, want)
			}
		}
	}
}

func TestFilterMatch(t *testing.T) {
	q, _ := url.ParseQuery("subject=orders.*.paid&type=message&type=refund&key=k1")
	f, err := parseFilter(q, Info{Subject: "orders.>", Keyed: true}, nil)
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

// subjectedSource is a stubSource that tells its stream's subjects.
type subjectedSource struct {
	stubSource
	subjects []string
}

func (s subjectedSource) StreamSubjects() []string { return s.subjects }

// endAtFlush is a ResponseRecorder that ends the request once its
// response is flushed: a stream ends after its first frame.
type endAtFlush struct {
	*httptest.ResponseRecorder
	end context.CancelFunc
}

func (r endAtFlush) Flush() {
	r.ResponseRecorder.Flush()
	r.end()
}

// A route whose source tells its stream's subjects answers 400 to a
// subject none of them can match, alone and in a merged stream, and
// serves one that can.
func TestSubjectOutsideStream(t *testing.T) {
	src := subjectedSource{stubSource{Info{Stream: "stub", History: true, Subject: ">"}}, []string{"orders.>"}}
	b, err := New(Config{}, Route{Path: "/s", Source: src})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown(context.Background())
	for _, tc := range []struct {
		target string
		status int
	}{
		{"/s?subject=payments.new", 400},
		{"/s?subject=orders.new", 200},
		{"/s?subject=*.new", 200},
		{"/_streams?route=" + url.QueryEscape("/s?subject=payments.new"), 400},
		{"/_streams?route=" + url.QueryEscape("/s?subject=orders.new"), 200},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		rec := endAtFlush{httptest.NewRecorder(), cancel} // a stream ends after its first frame
		b.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodGet, tc.target, nil))
		if rec.Code != tc.status {
			t.Errorf("%s: %d %q, want %d", tc.target, rec.Code, rec.Body.String(), tc.status)
		}
		if rec.Code == 400 && !strings.Contains(rec.Body.String(), "matches no subject of the stream (orders.>)") {
			t.Errorf("%s: 400 %q, want the reason", tc.target, rec.Body.String())
		}
	}
}

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
