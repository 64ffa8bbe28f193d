package bridge

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/esbridge/esbridge/esource"
)

// BinaryType is the event type of a raw-format message whose payload is
// not valid UTF-8: its data is the payload in standard base64.
const BinaryType = "binary"

// The labels of an event, for filters (see filter.go): the message's
// subject and key, on routes whose clients may filter on them.
const (
	labelSubject = iota
	labelKey
)

// translator turns a route's messages into events.
type translator struct {
	opts Options
	info Info
}

// event returns the event for m, with the given ID; its labels come from
// s, if not nil. On a snapshot route (see snapshot.go), a message that
// deletes its key is an event of type DeleteType, and every other one
// tells its key: in the envelope's key, or in the first line of the raw
// format's data.
func (t translator) event(id string, m *Message, s *slab) esource.Event {
	ev := esource.Event{ID: id, Type: t.eventType(m)}
	switch {
	case t.info.Subject == "" && !t.info.Keyed:
	case s != nil:
		ev.Labels = s.strings(2)
		ev.Labels[labelSubject], ev.Labels[labelKey] = m.Subject, s.string(m.Key)
	default:
		ev.Labels = []string{labelSubject: m.Subject, labelKey: string(m.Key)}
	}
	key, keyed := t.snapshotKey(m)
	if keyed && t.deletes(m) {
		ev.Type, ev.Data = DeleteType, deletion(key)
		return ev
	}
	switch {
	case t.opts.Format == FormatEnvelope:
		ev.Data = t.envelope(m, key, keyed)
	case t.opts.Snapshot != "":
		ev.Data = t.rawKeyed(&ev, m, key)
	case utf8.Valid(m.Data):
		ev.Data = m.Data
	default:
		ev.Type, ev.Data = BinaryType, base64.StdEncoding.EncodeToString(m.Data)
	}
	return ev
}

// rawKeyed returns the data of a message in the raw format on a snapshot
// route: its key, percent-encoded (see keyLine), a line feed, then its
// payload (in base64, with ev's type BinaryType, if it is not UTF-8).
func (t translator) rawKeyed(ev *esource.Event, m *Message, key []byte) []byte {
	b := append(keyLine(key), '\n')
	if utf8.Valid(m.Data) {
		return append(b, m.Data...)
	}
	ev.Type = BinaryType
	return base64.StdEncoding.AppendEncode(b, m.Data)
}

// keyLine returns key percent-encoded as a URL path segment is
// (JavaScript's decodeURIComponent reads it back): never a line break.
func keyLine(key []byte) []byte {
	return []byte(url.PathEscape(string(key)))
}

func (t translator) eventType(m *Message) string {
	var typ string
	switch {
	case t.opts.Type == TypeSubject:
		typ = m.Subject
		if m.Topic != "" {
			typ = m.Topic
		}
	case strings.HasPrefix(t.opts.Type, "header:"):
		name := strings.TrimPrefix(t.opts.Type, "header:")
		for _, h := range m.Headers {
			if strings.EqualFold(h.Key, name) {
				typ = h.Value
				break
			}
		}
	}
	if strings.ContainsAny(typ, "\r\n") || !utf8.ValidString(typ) {
		return "" // cannot be an SSE event type: the message goes as "message"
	}
	return typ
}

// envelope is the JSON form of a message in the envelope format.
type envelope struct {
	Subject    string              `json:"subject,omitempty"`
	Topic      string              `json:"topic,omitempty"`
	Partition  *int                `json:"partition,omitempty"`
	Sequence   *uint64             `json:"sequence,omitempty"`
	Offset     *uint64             `json:"offset,omitempty"`
	Key        *string             `json:"key,omitempty"`
	KeyBase64  []byte              `json:"key_base64,omitempty"`
	Headers    map[string][]string `json:"headers,omitempty"`
	Time       *time.Time          `json:"time,omitempty"`
	Data       *string             `json:"data,omitempty"`
	DataBase64 []byte              `json:"data_base64,omitempty"`
}

// envelope returns the envelope of msg. key, if keyed, is its snapshot
// key, which the envelope's key tells where the message has no Kafka key.
func (t translator) envelope(msg *Message, key []byte, keyed bool) []byte {
	// The fields point into a copy: msg itself does not escape, so that
	// a reader's message costs no allocation in the other formats.
	m := new(Message)
	*m = *msg
	e := envelope{Subject: m.Subject, Topic: m.Topic}
	if m.Topic != "" {
		e.Partition = &m.Partition
	}
	if t.info.History {
		if t.info.OffsetName == "sequence" {
			e.Sequence = &m.Offset
		} else {
			e.Offset = &m.Offset
		}
	}
	if !keyed {
		key = m.Key
	}
	if key != nil {
		if utf8.Valid(key) {
			k := string(key)
			e.Key = &k
		} else {
			e.KeyBase64 = key
		}
	}
	if len(m.Headers) > 0 {
		e.Headers = make(map[string][]string, len(m.Headers))
		for _, h := range m.Headers {
			e.Headers[h.Key] = append(e.Headers[h.Key], h.Value)
		}
	}
	if !m.Time.IsZero() {
		e.Time = &m.Time
	}
	if utf8.Valid(m.Data) {
		d := string(m.Data)
		e.Data = &d
	} else {
		e.DataBase64 = m.Data
	}
	b, err := json.Marshal(e)
	if err != nil { // unreachable: every field encodes
		return []byte(`{}`)
	}
	return b
}
