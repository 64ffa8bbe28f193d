package esource

import (
	"bytes"
	"encoding/json"
	"errors"
	"github.com/esbridge/esbridge/internal/ssetest"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEventWriteTo(t *testing.T) {
	tests := []struct {
		name string
		ev   Event
		want string
	}{
		{"zero", Event{}, "\n"},
		{"text", Event{Data: "hello"}, "data: hello\n\n"},
		{"empty string is an event", Event{Data: ""}, "data:\n\n"},
		{"bytes", Event{Data: []byte("raw")}, "data: raw\n\n"},
		{"raw json", Event{Data: json.RawMessage(`{"a":1}`)}, "data: {\"a\":1}\n\n"},
		{"json", Event{Data: map[string]int{"a": 1}}, "data: {\"a\":1}\n\n"},
		{"json string", Event{Data: []string{"x"}}, "data: [\"x\"]\n\n"},
		{"all fields", Event{ID: "7", Type: "tick", Data: "x"}, "id: 7\nevent: tick\ndata: x\n\n"},
		{"id only", Event{ID: "k:42"}, "id: k:42\n\n"},
		{"LF", Event{Data: "a\nb"}, "data: a\ndata: b\n\n"},
		{"CR", Event{Data: "a\rb"}, "data: a\ndata: b\n\n"},
		{"CRLF", Event{Data: "a\r\nb"}, "data: a\ndata: b\n\n"},
		{"LF CR", Event{Data: "a\n\rb"}, "data: a\ndata:\ndata: b\n\n"},
		{"trailing LF", Event{Data: "a\n"}, "data: a\ndata:\n\n"},
		{"only LF", Event{Data: "\n"}, "data:\ndata:\n\n"},
		{"leading space kept", Event{Data: " a"}, "data:  a\n\n"},
		{"colon in data", Event{Data: "a: b"}, "data: a: b\n\n"},
		{"unicode", Event{ID: "é", Type: "ü", Data: "日本"}, "id: é\nevent: ü\ndata: 日本\n\n"},
		{"NUL in data", Event{Data: "a\x00b"}, "data: a\x00b\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			n, err := tt.ev.WriteTo(&buf)
			if err != nil {
				t.Fatalf("WriteTo: %v", err)
			}
			if got := buf.String(); got != tt.want {
				t.Errorf("WriteTo wrote %q, want %q", got, tt.want)
			}
			if n != int64(buf.Len()) {
				t.Errorf("WriteTo returned %d, wrote %d bytes", n, buf.Len())
			}
		})
	}
}

func TestEventWriteToRejects(t *testing.T) {
	tests := []struct {
		name string
		ev   Event
	}{
		{"LF in id", Event{ID: "a\nb"}},
		{"CR in id", Event{ID: "a\rb"}},
		{"NUL in id", Event{ID: "a\x00b"}},
		{"space around id", Event{ID: " a"}},
		{"tab after id", Event{ID: "a\t"}},
		{"invalid UTF-8 id", Event{ID: "\xff"}},
		{"LF in type", Event{Type: "a\nb"}},
		{"CR in type", Event{Type: "a\r"}},
		{"invalid UTF-8 type", Event{Type: "\xfe"}},
		{"invalid UTF-8 data", Event{Data: "a\xffb"}},
		{"invalid UTF-8 bytes", Event{Data: []byte{0xc3}}},
		{"unencodable data", Event{Data: make(chan int)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			_, err := tt.ev.WriteTo(&buf)
			if !errors.Is(err, ErrInvalidEvent) {
				t.Errorf("WriteTo error = %v, want ErrInvalidEvent", err)
			}
			if buf.Len() != 0 {
				t.Errorf("WriteTo wrote %q despite the error", buf.String())
			}
		})
	}
}

// TestWireParsesBack checks what a browser makes of the wire bytes.
func TestWireParsesBack(t *testing.T) {
	var buf bytes.Buffer
	evs := []Event{
		{ID: "1", Data: "one"},
		{Type: "custom", Data: "two\r\nlines"},
		{ID: "3"}, // moves the last event ID without an event
		{Data: ""},
		{ID: "5", Type: "gap", Data: "x"},
		{Data: "after a typed event"},
	}
	for _, ev := range evs {
		if _, err := ev.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
	}
	got, _, err := ssetest.ParseAll(&buf)
	if err != nil {
		t.Fatal(err)
	}
	want := []ssetest.Event{
		{Type: "message", Data: "one", LastEventID: "1"},
		{Type: "custom", Data: "two\nlines", LastEventID: "1"},
		{Type: "message", Data: "", LastEventID: "3"},
		{Type: "gap", Data: "x", LastEventID: "5"},
		{Type: "message", Data: "after a typed event", LastEventID: "5"},
	}
	if len(got) != len(want) {
		t.Fatalf("parsed %d events %q, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// FuzzWireRoundTrip checks that a browser parsing what WriteTo emits gets
// the event back: the same ID, type and data (with CR and CRLF as LF).
func FuzzWireRoundTrip(f *testing.F) {
	f.Add("1", "", "hello", true)
	f.Add("", "tick", "a\r\nb\rc\n", true)
	f.Add("k:1.2", "x", "", true)
	f.Add("7", "", "", false)
	f.Add(" x", "a\nb", "\xff", true)
	f.Fuzz(func(t *testing.T, id, typ, data string, hasData bool) {
		ev := Event{ID: id, Type: typ}
		if hasData {
			ev.Data = data
		}
		var buf bytes.Buffer
		if _, err := ev.WriteTo(&buf); err != nil {
			valid := !strings.ContainsAny(id, "\r\n\x00") && utf8.ValidString(id) &&
				strings.Trim(id, " \t") == id && !strings.ContainsAny(typ, "\r\n") &&
				utf8.ValidString(typ) && (!hasData || utf8.ValidString(data))
			if valid {
				t.Fatalf("WriteTo(%+v) failed on a valid event: %v", ev, err)
			}
			return
		}
		wire := buf.String()
		if !utf8.ValidString(wire) {
			t.Fatalf("wire %q is not valid UTF-8", wire)
		}
		if !strings.HasSuffix(wire, "\n\n") && wire != "\n" {
			t.Fatalf("wire %q does not end with a blank line", wire)
		}
		p := ssetest.NewParser()
		got := p.Feed(buf.Bytes())
		if p.LastEventID != id {
			t.Errorf("last event ID %q, want %q (wire %q)", p.LastEventID, id, wire)
		}
		if !hasData {
			if len(got) != 0 {
				t.Errorf("an event without data dispatched %q", got)
			}
			return
		}
		wantType := typ
		if wantType == "" {
			wantType = "message"
		}
		wantData := strings.ReplaceAll(strings.ReplaceAll(data, "\r\n", "\n"), "\r", "\n")
		want := ssetest.Event{Type: wantType, Data: wantData, LastEventID: id}
		if len(got) != 1 || got[0] != want {
			t.Errorf("parsed %q from wire %q, want %+v", got, wire, want)
		}
		// Tee's decoder must agree with the browser, with the event in one
		// buffer or split after its first line, as the hand-off rule splits it.
		b := buf.Bytes()
		first := bytes.IndexByte(b, '\n') + 1
		for _, parts := range [][][]byte{{b}, {b[:first], b[first:]}} {
			var tee []Event
			var d wireDecoder
			for _, p := range parts {
				d.decode(p, func(ev Event) bool { tee = append(tee, ev); return true })
			}
			if len(tee) != 1 || tee[0].ID != id || tee[0].Type != typ || tee[0].Data != wantData {
				t.Errorf("wireDecoder gave %+v from %d parts, want ID %q type %q data %q", tee, len(parts), id, typ, wantData)
			}
		}
	})
}
