package bridge

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"

	"github.com/esbridge/esbridge/esource"
)

// entryOp returns a write of key k with value v, or its deletion.
func entryOp(t testing.TB, k, v int, del bool) snapOp {
	key := fmt.Sprintf("k%d", k)
	if del {
		return snapOp{key: key, del: true}
	}
	enc, err := esource.Encode(esource.Event{Data: fmt.Sprintf("%s=%d", key, v)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return snapOp{key: key, ev: enc}
}

// viewOf returns what a snapshot of v sends, by key.
func viewOf(v snapView) map[string]string {
	m := map[string]string{}
	for _, e := range v.entries {
		if d := e.dead.Load(); d == 0 || d > v.clock {
			m[e.key] = fmt.Sprint(e.ev.Len()) + e.key
		}
	}
	return m
}

// TestSnapGen: snapshots taken while the table is written, across
// compactions, each send exactly the table as of their write, read
// without a lock while the writer goes on (run with -race).
func TestSnapGen(t *testing.T) {
	const keys, writes = 200, 20000
	tab := &snapTable{maxKeys: keys, maxBytes: 1 << 30, state: snapReady, gen: newSnapGen(), ready: make(chan struct{})}
	model := map[string]string{} // the state after each write, as viewOf renders it
	type taken struct {
		v    snapView
		want map[string]string
	}
	var (
		mu   sync.Mutex
		seen []taken
		wg   sync.WaitGroup
	)
	rng := rand.New(rand.NewPCG(1, 2))
	gens := map[*snapGen]bool{}
	for i := range writes {
		k := rng.IntN(keys)
		op := entryOp(t, k, i, rng.IntN(4) == 0)
		tab.mu.Lock()
		tab.gen.write(op)
		tab.gen = tab.gen.compacted()
		gens[tab.gen] = true
		tab.mu.Unlock()
		if op.del {
			delete(model, op.key)
		} else {
			model[op.key] = fmt.Sprint(op.ev.Len()) + op.key
		}
		if i%500 == 0 {
			v, _, _ := tab.view()
			want := make(map[string]string, len(model))
			for k, v := range model {
				want[k] = v
			}
			wg.Go(func() { // read while the writes go on, and again after
				runtime.Gosched()
				now := viewOf(v)
				mu.Lock()
				seen = append(seen, taken{v, want})
				if fmt.Sprint(now) != fmt.Sprint(want) {
					t.Errorf("a snapshot read while the table was written: %d keys, want %d", len(now), len(want))
				}
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	if len(gens) < 3 {
		t.Fatalf("%d generations: the test did not compact", len(gens))
	}
	for i, s := range seen {
		if got := viewOf(s.v); fmt.Sprint(got) != fmt.Sprint(s.want) {
			t.Fatalf("snapshot %d: %d keys, want %d", i, len(got), len(s.want))
		}
	}
	// The table holds at most about twice its live entries.
	if g := tab.gen; len(g.entries) > 2*len(g.index)+1024 {
		t.Fatalf("%d entries for %d keys", len(g.entries), len(g.index))
	}
}
