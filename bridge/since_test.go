package bridge

import (
	"errors"
	"strconv"
	"testing"
	"time"
)

func TestParseSince(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		err  error
	}{
		{"2024-05-01T12:00:00Z", time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC), nil},
		{"2024-05-01T14:00:00.123456789+02:00", time.Date(2024, 5, 1, 12, 0, 0, 123456789, time.UTC), nil},
		{"1714564800000", time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC), nil},
		{"1714564800123", time.Date(2024, 5, 1, 12, 0, 0, 123e6, time.UTC), nil},
		{"0", time.Unix(0, 0), nil},
		{"1970-01-01T00:00:00Z", time.Unix(0, 0), nil},
		{"253402300799999", time.UnixMilli(253402300799999), nil},
		{"253402300800000", time.Time{}, errSinceRange},
		{"99999999999999999999", time.Time{}, errSinceRange},
		{"1969-12-31T23:59:59Z", time.Time{}, errSinceRange},
		{"9999-12-31T23:59:59-01:00", time.Time{}, errSinceRange},
		{"-1", time.Time{}, errSinceSyntax},
		{"+1714564800000", time.Time{}, errSinceSyntax},
		{"1714564800.5", time.Time{}, errSinceSyntax},
		{"2024-05-01", time.Time{}, errSinceSyntax},
		{"2024-05-01 12:00:00Z", time.Time{}, errSinceSyntax},
		{"yesterday", time.Time{}, errSinceSyntax},
		{"2024-05-01T12:00:00.000000000000000000000000Z", time.Time{}, errSinceSyntax}, // too long
	}
	for _, tt := range tests {
		got, err := parseSince(tt.in)
		if !errors.Is(err, tt.err) || !got.Equal(tt.want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v, %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

// FuzzParseSince: parseSince accepts only times from 1970 to 9999, from
// input of bounded length, and reads back what it accepted when printed in
// either of its forms.
func FuzzParseSince(f *testing.F) {
	for _, s := range []string{"2024-05-01T12:00:00Z", "1714564800123", "0", "2024-05-01T14:00:00.5+02:00", "9999-12-31T23:59:59.999999999-23:59"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseSince(s)
		if err != nil {
			return
		}
		if len(s) > maxSinceLength || got.Before(time.Unix(0, 0)) || got.UnixMilli() > maxSinceMillis {
			t.Fatalf("parseSince(%q) = %v, want an error", s, got)
		}
		forms := []string{got.UTC().Format(time.RFC3339Nano)}
		if got.Nanosecond()%1e6 == 0 {
			forms = append(forms, strconv.FormatInt(got.UnixMilli(), 10))
		}
		for _, form := range forms {
			again, err := parseSince(form)
			if err != nil || !again.Equal(got) {
				t.Fatalf("parseSince(%q) = %v; printed as %q it reads %v, %v", s, got, form, again, err)
			}
		}
	})
}

func TestSinceAllowed(t *testing.T) {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	hourAgo, dayAgo := now.Add(-time.Hour), now.Add(-24*time.Hour)
	tests := []struct {
		opts Options
		t    time.Time
		want bool
	}{
		{Options{}, hourAgo, false},
		{Options{Earliest: true}, dayAgo, true},
		{Options{Earliest: true, MaxSince: -1}, hourAgo, false},
		{Options{MaxSince: 2 * time.Hour}, hourAgo, true},
		{Options{MaxSince: 2 * time.Hour}, dayAgo, false},
		{Options{MaxSince: time.Hour}, hourAgo, true},
		{Options{Earliest: true, MaxSince: 2 * time.Hour}, dayAgo, false},
	}
	for _, tt := range tests {
		if got := tt.opts.sinceAllowed(tt.t, now); got != tt.want {
			t.Errorf("%+v: sinceAllowed(%v) = %v, want %v", tt.opts, now.Sub(tt.t), got, tt.want)
		}
	}
}
