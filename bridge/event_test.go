package bridge

import (
	"testing"
	"time"

	"github.com/esbridge/esbridge/esource"
)

func TestTranslate(t *testing.T) {
	when := time.Date(2026, 11, 25, 18, 0, 0, 0, time.UTC)
	nats := Info{Stream: "jetstream/S", History: true, OffsetName: "sequence"}
	kafka := Info{Stream: "kafka/orders", History: true, OffsetName: "offset"}
	msg := Message{Offset: 41, Subject: "orders.eu", Headers: []Header{{"Kind", "created"}, {"Kind", "x"}}, Time: when, Data: []byte("hello")}
	tests := []struct {
		name string
		info Info
		opts Options
		msg  Message
		want esource.Event
	}{
		{"raw", nats, Options{}, msg, esource.Event{ID: "id", Data: []byte("hello")}},
		{"subject", nats, Options{Type: TypeSubject}, msg, esource.Event{ID: "id", Type: "orders.eu", Data: []byte("hello")}},
		{"header", nats, Options{Type: "header:kind"}, msg, esource.Event{ID: "id", Type: "created", Data: []byte("hello")}},
		{"missing header", nats, Options{Type: "header:other"}, msg, esource.Event{ID: "id", Data: []byte("hello")}},
		{"header unfit for a type", nats, Options{Type: "header:k"}, Message{Headers: []Header{{"k", "a\nb"}}, Data: []byte("x")}, esource.Event{ID: "id", Data: []byte("x")}},
		{"binary", nats, Options{}, Message{Data: []byte{0xff, 0x00, 'a'}}, esource.Event{ID: "id", Type: BinaryType, Data: "/wBh"}},
		{"envelope", nats, Options{Format: FormatEnvelope}, msg, esource.Event{ID: "id", Data: `{"subject":"orders.eu","sequence":41,"headers":{"Kind":["created","x"]},"time":"2026-11-25T18:00:00Z","data":"hello"}`}},
		{"envelope kafka", kafka, Options{Format: FormatEnvelope, Type: TypeSubject},
			Message{Topic: "orders", Partition: 3, Offset: 7, Key: []byte("k1"), Data: []byte{0xff}},
			esource.Event{ID: "id", Type: "orders", Data: `{"topic":"orders","partition":3,"offset":7,"key":"k1","data_base64":"/w=="}`}},
		{"envelope live", Info{Stream: "nats/x"}, Options{Format: FormatEnvelope}, Message{Subject: "x", Key: []byte{0xfe}, Data: []byte("")},
			esource.Event{ID: "id", Data: `{"subject":"x","key_base64":"/g==","data":""}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := translator{opts: tt.opts, info: tt.info}
			if tr.opts.Format == "" {
				tr.opts.Format = FormatRaw
			}
			got := tr.event("id", &tt.msg, nil)
			if got.ID != tt.want.ID || got.Type != tt.want.Type || toString(got.Data) != toString(tt.want.Data) {
				t.Errorf("got %+v (data %s), want %+v (data %s)", got, toString(got.Data), tt.want, toString(tt.want.Data))
			}
		})
	}
}

func toString(d any) string {
	switch d := d.(type) {
	case string:
		return d
	case []byte:
		return string(d)
	}
	return "?"
}
