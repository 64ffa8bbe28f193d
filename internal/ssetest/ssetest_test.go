package ssetest

import "testing"

// The parser is the yardstick of the other tests: check it against the
// standard's examples and edge cases.
func TestParser(t *testing.T) {
	tests := []struct {
		in   string
		want []Event
	}{
		{"\xef\xbb\xbfdata: bom\n\n", []Event{{Type: "message", Data: "bom", LastEventID: ""}}},
		{"data:a\r\rdata:b\r\n\r\n", []Event{{Type: "message", Data: "a", LastEventID: ""}, {Type: "message", Data: "b", LastEventID: ""}}},
		{"data\n\n", []Event{{Type: "message", Data: "", LastEventID: ""}}},
		{"data:  two\n\n", []Event{{Type: "message", Data: " two", LastEventID: ""}}},
		{"id: 1\x00\ndata: x\n\n", []Event{{Type: "message", Data: "x", LastEventID: ""}}},
		{"event: e\n\ndata: x\n\n", []Event{{Type: "message", Data: "x", LastEventID: ""}}},
		{": comment\ndata: x\nDATA: y\n\n", []Event{{Type: "message", Data: "x", LastEventID: ""}}},
		{"data: unterminated", nil},
		{"data: \xff\n\n", []Event{{Type: "message", Data: "\uFFFD", LastEventID: ""}}},
	}
	for _, tt := range tests {
		p := NewParser()
		var got []Event
		for i := range len(tt.in) { // one byte at a time
			got = append(got, p.Feed([]byte{tt.in[i]})...)
		}
		if len(got) != len(tt.want) {
			t.Errorf("%q: got %q, want %q", tt.in, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("%q: event %d = %+v, want %+v", tt.in, i, got[i], tt.want[i])
			}
		}
	}
	p := NewParser()
	p.Feed([]byte("retry: 1500\nretry: 1x\n\n"))
	if p.Retry != 1500 {
		t.Errorf("retry = %d, want 1500", p.Retry)
	}
}
