package bridge

import (
	"errors"
	"net/url"
	"testing"
	"time"
)

func TestParseOptions(t *testing.T) {
	tests := []struct {
		query string
		want  Options
		rest  string
	}{
		{"", Options{Format: FormatRaw}, ""},
		{"start=earliest&type=subject&format=envelope", Options{Earliest: true, Type: TypeSubject, Format: FormatEnvelope}, ""},
		{"start=latest&type=header:Kind&subject=a.b", Options{Type: "header:Kind", Format: FormatRaw}, "subject=a.b"},
		{"type=&format=raw&token=s3cret", Options{Format: FormatRaw}, "token=s3cret"},
		{"max_since=36h", Options{Format: FormatRaw, MaxSince: 36 * time.Hour}, ""},
		{"max_since=0", Options{Format: FormatRaw, MaxSince: -1}, ""},
	}
	for _, tt := range tests {
		q, _ := url.ParseQuery(tt.query)
		got, rest, err := ParseOptions(q)
		if err != nil || got != tt.want || rest.Encode() != tt.rest {
			t.Errorf("ParseOptions(%q) = %+v, %q, %v; want %+v, %q", tt.query, got, rest.Encode(), err, tt.want, tt.rest)
		}
	}
	for _, bad := range []string{"start=now", "type=header:", "type=kind", "format=json", "max_since=-1h", "max_since=1d", "max_since=", "start=earliest&start=latest", "format=raw&format=raw"} {
		q, _ := url.ParseQuery(bad)
		if _, _, err := ParseOptions(q); !errors.Is(err, ErrBadOption) {
			t.Errorf("ParseOptions(%q): %v, want ErrBadOption", bad, err)
		}
	}
}
