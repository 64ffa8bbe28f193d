package nats

import (
	"errors"
	"slices"
	"testing"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/brokertest"
)

var _ bridge.Headed = (*Source)(nil)

// wholeAndEU returns two sources of stream ORDERS, each with a reader
// open: one of the whole stream, one of subject orders.eu.>.
func (ts *testServer) wholeAndEU(t *testing.T) (whole, eu *Source) {
	t.Helper()
	whole = ts.source(Config{Stream: "ORDERS"})
	eu = ts.source(Config{Stream: "ORDERS", Subject: "orders.eu.>"})
	brokertest.Open(t, whole, bridge.Start{})
	brokertest.Open(t, eu, bridge.Start{})
	return whole, eu
}

// Head is the sequence after the stream's last message; on a filtered
// route, after the last message on its subject. Core NATS has none.
func TestHead(t *testing.T) {
	ts := runServer(t)
	js := createStream(t, ts, 0)
	whole, eu := ts.wholeAndEU(t)
	head := func(s *Source) bridge.Position {
		t.Helper()
		p, err := s.Head(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if p := head(whole); !slices.Equal(p, bridge.Position{1}) {
		t.Errorf("head of an empty stream %v, want [1]", p)
	}
	if p := head(eu); !slices.Equal(p, bridge.Position{0}) {
		t.Errorf("head of a filter with no message %v, want [0]", p)
	}
	publish(t, js, "orders.eu.new", 1, 3) // sequences 1..3
	publish(t, js, "orders.us.new", 4, 2) // 4..5
	if p := head(whole); !slices.Equal(p, bridge.Position{6}) {
		t.Errorf("head %v, want [6]", p)
	}
	if p := head(eu); !slices.Equal(p, bridge.Position{4}) {
		t.Errorf("head of orders.eu.> %v, want [4], after its last message", p)
	}

	core := ts.source(Config{Subject: "ticks"})
	brokertest.Open(t, core, bridge.Start{})
	if _, err := core.Head(t.Context()); !errors.Is(err, bridge.ErrNoHistory) {
		t.Errorf("Head of core NATS: %v, want ErrNoHistory", err)
	}
}
