package main

import (
	"net/http/httptest"
	"slices"
	"testing"
)

// A merged stream needs a token that opens every protected route it
// lists; a public route needs none, and a list the bridge refuses (400)
// asks for none either.
func TestRoutesOpened(t *testing.T) {
	opened := routesOpened([]string{"/a", "/b"})
	for target, want := range map[string][]string{
		"/a":                                   {"/a"},
		"/public":                              nil,
		"/_streams?route=/a&route=/b":          {"/a", "/b"},
		"/_streams?route=/public&route=/b":     {"/b"},
		"/_streams?route=/public":              nil,
		"/_streams?route=/a&route=/a":          nil,
		"/_streams?route=%2Fb&lastEventId=xyz": {"/b"},
	} {
		if got := opened(httptest.NewRequest("GET", target, nil)); !slices.Equal(got, want) {
			t.Errorf("%s: got %q, want %q", target, got, want)
		}
	}
}
