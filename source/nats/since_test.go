package nats

import (
	"errors"
	"testing"
	"time"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/brokertest"
)

var _ bridge.Seeker = (*Source)(nil)

// PositionAt is the sequence of the first message stored at or after the
// time, on the route's subject if it has one, or the sequence after the
// last message. Core NATS has none.
func TestPositionAt(t *testing.T) {
	ts := runServer(t)
	js := createStream(t, ts, 0)
	whole, eu := ts.wholeAndEU(t)
	at := func(s *Source, when time.Time) uint64 {
		t.Helper()
		p, err := s.PositionAt(t.Context(), when)
		if err != nil || len(p) != 1 {
			t.Fatalf("PositionAt(%v) = %v, %v", when, p, err)
		}
		return p[0]
	}
	if seq := at(whole, time.Now().Add(-time.Hour)); seq != 1 {
		t.Errorf("in an empty stream: %d, want 1", seq)
	}

	publish(t, js, "orders.eu.new", 1, 3) // sequences 1..3
	publish(t, js, "orders.us.new", 4, 2) // 4..5
	publish(t, js, "orders.eu.new", 6, 2) // 6..7
	st, err := js.Stream(t.Context(), "ORDERS")
	if err != nil {
		t.Fatal(err)
	}
	times := make([]time.Time, 8) // by sequence, as the server stored them
	for seq := uint64(1); seq <= 7; seq++ {
		m, err := st.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		times[seq] = m.Time
	}
	// first returns the first sequence at or after when, on subjects
	// "eu" or any, by the stored times.
	first := func(when time.Time, euOnly bool) uint64 {
		for seq := uint64(1); seq <= 7; seq++ {
			if !times[seq].Before(when) && (!euOnly || seq <= 3 || seq >= 6) {
				return seq
			}
		}
		return 8
	}
	tests := []struct {
		name string
		when time.Time
	}{
		{"before the oldest", times[1].Add(-time.Hour)},
		{"at the oldest", times[1]},
		{"at a message", times[2]},
		{"just after a message", times[2].Add(time.Nanosecond)},
		{"at a message of another subject", times[4]},
		{"at the last", times[7]},
		{"after the last", times[7].Add(time.Nanosecond)},
		{"in the future", time.Now().Add(time.Hour)},
	}
	for _, tt := range tests {
		if got, want := at(whole, tt.when), first(tt.when, false); got != want {
			t.Errorf("%s: %d, want %d", tt.name, got, want)
		}
		if got, want := at(eu, tt.when), first(tt.when, true); got != want {
			t.Errorf("%s, on orders.eu.>: %d, want %d", tt.name, got, want)
		}
	}
	// The cases say what they say.
	if first(times[2], false) != 2 || first(times[4], true) != 6 || first(times[1].Add(-time.Hour), false) != 1 {
		t.Fatalf("stored times out of order: %v", times)
	}

	core := ts.source(Config{Subject: "ticks"})
	brokertest.Open(t, core, bridge.Start{})
	if _, err := core.PositionAt(t.Context(), time.Now()); !errors.Is(err, bridge.ErrNoHistory) {
		t.Errorf("PositionAt of core NATS: %v, want ErrNoHistory", err)
	}
}
