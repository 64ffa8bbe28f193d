package esource

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
	"unsafe"
)

// An Event is one message of an event stream.
//
// The zero Event is valid and encodes to a lone blank line, which a browser
// ignores. An Event is a plain value; it is safe to share once built.
type Event struct {
	// ID is the event's ID: the browser's resume point, sent back in the
	// Last-Event-ID header when it reconnects. It must not contain CR, LF or
	// NUL, must be valid UTF-8 and must not begin or end with a space or a
	// tab (HTTP trims those from the header). Empty means no id line: the
	// browser keeps the previous ID.
	ID string

	// Type is the event type, dispatched to addEventListener(Type). It must
	// not contain CR or LF and must be valid UTF-8. Empty means "message",
	// so that onmessage fires.
	Type string

	// Data is the payload. A string or a []byte (json.RawMessage included)
	// is sent as text and must be valid UTF-8; CR, LF and CRLF in it all
	// arrive as LF. Nil sends no data, so the event only moves the browser's
	// last event ID (or does nothing at all). Any other value is encoded
	// with encoding/json.
	Data any

	// Labels are what a Filter may match the event by besides its type
	// (the subject or the key of a broker message, say). They are not
	// sent, and must not change once the event is published.
	Labels []string
}

// WriteTo writes the wire encoding of e to w, as defined by the WHATWG HTML
// standard: the id and event lines when set, one data line per line of
// data, and a blank line. It returns ErrInvalidEvent, wrapped with the
// reason, for an event it cannot encode; then it writes nothing.
func (e *Event) WriteTo(w io.Writer) (int64, error) {
	b, err := e.appendWire(nil)
	if err != nil {
		return 0, err
	}
	n, err := w.Write(b)
	return int64(n), err
}

// appendWire appends the wire encoding of e to dst. On error dst is
// returned unchanged.
func (e *Event) appendWire(dst []byte) ([]byte, error) {
	if err := checkID(e.ID); err != nil {
		return dst, err
	}
	if hasAnyByte(e.Type, "\r\n") || !utf8.ValidString(e.Type) {
		return dst, fmt.Errorf("%w: type %q must be UTF-8 without CR or LF", ErrInvalidEvent, e.Type)
	}
	var data string
	switch d := e.Data.(type) {
	case nil:
	case string:
		data = d
	case []byte:
		data = bytesText(d)
	case json.RawMessage:
		data = bytesText(d)
	default:
		b, err := json.Marshal(d)
		if err != nil {
			return dst, fmt.Errorf("%w: data: %w", ErrInvalidEvent, err)
		}
		data = bytesText(b)
	}
	if !utf8.ValidString(data) {
		return dst, fmt.Errorf("%w: data is not valid UTF-8", ErrInvalidEvent)
	}
	dst = appendField(dst, "id", e.ID)
	dst = appendField(dst, "event", e.Type)
	if e.Data != nil {
		dst = appendLines(dst, "data", data)
	}
	return append(dst, '\n'), nil
}

// bytesText returns b as a string without copying it: appendWire only
// reads the string, and keeps nothing of it once it returns.
func bytesText(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// checkID reports whether id can travel as an SSE id and come back intact in
// a Last-Event-ID header.
func checkID(id string) error {
	switch {
	case hasAnyByte(id, "\r\n\x00"):
		return fmt.Errorf("%w: id %q contains CR, LF or NUL", ErrInvalidEvent, id)
	case !utf8.ValidString(id):
		return fmt.Errorf("%w: id %q is not valid UTF-8", ErrInvalidEvent, id)
	case id != "" && (isBlank(id[0]) || isBlank(id[len(id)-1])):
		return fmt.Errorf("%w: id %q begins or ends with white space", ErrInvalidEvent, id)
	}
	return nil
}

// hasAnyByte reports whether s contains any of the bytes: a scan per byte,
// faster than strings.ContainsAny for the few bytes of the wire format.
func hasAnyByte(s, bytes string) bool {
	for i := range len(bytes) {
		if strings.IndexByte(s, bytes[i]) >= 0 {
			return true
		}
	}
	return false
}

func isBlank(b byte) bool { return b == ' ' || b == '\t' }

// appendField appends "name: value\n", or nothing when value is empty.
func appendField(dst []byte, name, value string) []byte {
	if value == "" {
		return dst
	}
	dst = append(dst, name...)
	dst = append(dst, ": "...)
	dst = append(dst, value...)
	return append(dst, '\n')
}

// appendLines appends one "name: line\n" per line of text, splitting at CRLF,
// CR and LF; an empty text is one "name:\n" line.
func appendLines(dst []byte, name, text string) []byte {
	// Most texts have no CR: then lines end at LF only, found faster.
	cr := strings.IndexByte(text, '\r') >= 0
	for {
		i := strings.IndexByte(text, '\n')
		if cr {
			i = strings.IndexAny(text, "\r\n")
		}
		line := text
		if i >= 0 {
			line = text[:i]
		}
		dst = append(dst, name...)
		if line != "" {
			dst = append(dst, ": "...)
			dst = append(dst, line...)
		} else {
			dst = append(dst, ':')
		}
		dst = append(dst, '\n')
		if i < 0 {
			return dst
		}
		if text[i] == '\r' && i+1 < len(text) && text[i+1] == '\n' {
			i++
		}
		text = text[i+1:]
	}
}
