// Package ssetest parses event streams exactly as the WHATWG HTML standard's
// "Interpreting an event stream" says a browser does, so that tests see a
// stream as a browser would. It is for tests only.
package ssetest

import (
	"bufio"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// An Event is an event as a browser's EventSource dispatches it.
type Event struct {
	Type        string // "message" unless set
	Data        string
	LastEventID string
}

// Parser follows the WHATWG HTML standard's "Interpreting an event
// stream" to the letter, so that tests see the stream as a browser does.
// It is fed bytes incrementally.
type Parser struct {
	started   bool // the leading BOM has been looked for
	pendingCR bool // the last byte fed was a CR ending a line
	line      []byte

	eventType, data, lastEventIDBuf string
	LastEventID                     string // as EventSource.lastEventId
	Retry                           int    // reconnection time in ms, or -1
	events                          []Event
}

// NewParser returns a Parser at the start of a stream.
func NewParser() *Parser { return &Parser{Retry: -1} }

// Feed parses b and returns the events dispatched by it.
func (p *Parser) Feed(b []byte) []Event {
	p.events = p.events[:0]
	if !p.started {
		p.line = append(p.line, b...)
		if len(p.line) < 3 && strings.HasPrefix("\xef\xbb\xbf", string(p.line)) {
			return nil // might still be a BOM
		}
		p.started = true
		b = []byte(strings.TrimPrefix(string(p.line), "\xef\xbb\xbf"))
		p.line = p.line[:0]
	}
	for _, c := range b {
		switch {
		case c == '\n' && p.pendingCR:
			p.pendingCR = false // the LF of a CRLF
		case c == '\r' || c == '\n':
			p.pendingCR = c == '\r'
			p.processLine(decodeUTF8(p.line))
			p.line = p.line[:0]
		default:
			p.pendingCR = false
			p.line = append(p.line, c)
		}
	}
	return p.events
}

// decodeUTF8 decodes b as UTF-8, each invalid byte becoming U+FFFD.
func decodeUTF8(b []byte) string {
	var s strings.Builder
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		s.WriteRune(r)
		b = b[n:]
	}
	return s.String()
}

func (p *Parser) processLine(line string) {
	switch {
	case line == "":
		p.dispatch()
		return
	case line[0] == ':':
		return
	}
	field, value, found := strings.Cut(line, ":")
	if found {
		value = strings.TrimPrefix(value, " ")
	}
	switch field {
	case "event":
		p.eventType = value
	case "data":
		p.data += value + "\n"
	case "id":
		if !strings.Contains(value, "\x00") {
			p.lastEventIDBuf = value
		}
	case "retry":
		if value != "" && strings.Trim(value, "0123456789") == "" {
			if n, err := strconv.Atoi(value); err == nil {
				p.Retry = n
			}
		}
	}
}

func (p *Parser) dispatch() {
	p.LastEventID = p.lastEventIDBuf
	if p.data == "" {
		p.eventType = ""
		return
	}
	data := strings.TrimSuffix(p.data, "\n")
	typ := p.eventType
	if typ == "" {
		typ = "message"
	}
	p.events = append(p.events, Event{Type: typ, Data: data, LastEventID: p.LastEventID})
	p.data, p.eventType = "", ""
}

// ParseAll parses a whole stream, as a browser would up to its end.
func ParseAll(r io.Reader) (events []Event, p *Parser, err error) {
	p = NewParser()
	br := bufio.NewReader(r)
	buf := make([]byte, 4096)
	for {
		n, err := br.Read(buf)
		events = append(events, p.Feed(buf[:n])...)
		if err == io.EOF {
			return events, p, nil
		}
		if err != nil {
			return events, p, err
		}
	}
}
