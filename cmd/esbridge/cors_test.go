package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestAllowOrigin(t *testing.T) {
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h := allowOrigin(inner, "https://app.example.com")

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodOptions, "/orders", nil))
	if rec.Code != http.StatusNoContent || rec.Header().Get("Access-Control-Allow-Headers") != "Last-Event-ID, Cache-Control" ||
		rec.Header().Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Errorf("preflight: %d %v", rec.Code, rec.Header())
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/orders", nil))
	if rec.Code != http.StatusTeapot || rec.Header().Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		rec.Header().Get("Vary") != "Origin" {
		t.Errorf("GET: %d %v", rec.Code, rec.Header())
	}
}

func TestValidOrigin(t *testing.T) {
	for s, want := range map[string]bool{
		"https://app.example.com": true, "http://localhost:3000": true,
		"app.example.com": false, "https://a.com/path": false, "ftp://a.com": false, "https://": false,
	} {
		if got := validOrigin(s); got != want {
			t.Errorf("validOrigin(%q) = %v, want %v", s, got, want)
		}
	}
}
