package e2e

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/url"
	"slices"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/esbridge/esbridge/internal/poll"
)

// snapshotView is what the snapshot page (browser/snapshot.html) holds.
type snapshotView struct {
	Table       map[string]string `json:"table"`
	Snapshots   []string          `json:"snapshots"`
	InSnapshot  bool              `json:"inSnapshot"`
	Opens       int               `json:"opens"`
	LastEventID string            `json:"lastEventId"`
}

func (p *page) view() snapshotView {
	p.b.t.Helper()
	var v snapshotView
	p.eval(&v, "window.view")
	return v
}

// TestSnapshotBrowser: two pages render a table of 1,000 keys from a
// snapshot route and keep it live while keys are updated and deleted; the
// bridge is killed and started again, and the pages resume without a new
// snapshot; then one page is cut off while retention removes its
// position, and comes back with a fresh snapshot (reason expired). At the
// end each page's table is the broker's final state, exactly.
func TestSnapshotBrowser(t *testing.T) {
	t.Parallel()
	const keys, retained = 1000, 2500
	br := launchBrowser(t)
	ns, js := runJetStream(t)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "STATE", Subjects: []string{"state.>"}, MaxMsgs: retained}); err != nil {
		t.Fatal(err)
	}
	state := map[string]string{} // the broker's state: what every write made it
	rng := rand.New(rand.NewPCG(22, 22))
	n := 0
	write := func(ops int, deletes bool) {
		t.Helper()
		for range ops {
			n++
			key := fmt.Sprintf("state.k%04d", rng.IntN(keys)) // the subject is the key
			m := nats.NewMsg(key)
			if deletes && rng.IntN(4) == 0 {
				m.Header.Set("KV-Operation", "DEL")
				delete(state, key)
			} else {
				m.Data = fmt.Appendf(nil, "v%d", n)
				state[key] = string(m.Data)
			}
			if _, err := js.PublishMsg(context.Background(), m); err != nil {
				t.Fatal(err)
			}
		}
	}
	for k := range keys { // every key once
		n++
		key := fmt.Sprintf("state.k%04d", k)
		if _, err := js.Publish(t.Context(), key, fmt.Appendf(nil, "v%d", n)); err != nil {
			t.Fatal(err)
		}
		state[key] = fmt.Sprintf("v%d", n)
	}

	args := []string{"-route", "/state=jetstream://" + ns.Addr() + "/STATE?snapshot=subject&format=envelope", "-backlog", "16"}
	b := startBridge(t, args...)
	b.waitReady()
	pxA, pxB := startProxy(t, b.Addr), startProxy(t, b.Addr)
	pageURL := func(px *proxy) string {
		return px.srv.URL + "/snapshot.html?stream=" + url.QueryEscape("/state?view=snapshot")
	}
	a, bp := br.open(pageURL(pxA)), br.open(pageURL(pxB))
	pages := map[string]*page{"A": a, "B": bp}
	// each page's table becomes the broker's state, out of any snapshot
	same := func(what string) {
		t.Helper()
		for name, p := range pages {
			var v snapshotView
			if !poll.Wait(waitFor, func() bool {
				v = p.view()
				return !v.InSnapshot && len(v.Snapshots) > 0 && maps.Equal(v.Table, state)
			}) {
				t.Fatalf("%s: page %s has %d keys (snapshots %v), the broker %d", what, name, len(v.Table), v.Snapshots, len(state))
			}
		}
	}
	same("the first snapshots")
	write(600, true)
	same("live updates and deletes")

	// The bridge killed and started again: the pages resume from their IDs.
	b.Kill()
	write(200, true)
	b2 := startBridge(t, args...)
	b2.waitReady()
	pxA.setBackends(b2.Addr)
	pxB.setBackends(b2.Addr)
	same("after the bridge's restart")
	for name, p := range pages {
		if v := p.view(); !slices.Equal(v.Snapshots, []string{"new"}) || v.Opens < 2 {
			t.Fatalf("page %s: snapshots %v after %d opens, want one, and a resume", name, v.Snapshots, v.Opens)
		}
	}

	// Page B cut off while retention removes its position.
	pxB.setBackends()
	pxB.cut()
	write(retained+100, false)
	pxB.setBackends(b2.Addr)
	same("after page B's position expired")
	if v := bp.view(); !slices.Equal(v.Snapshots, []string{"new", "expired"}) {
		t.Fatalf("page B: snapshots %v, want new then expired", v.Snapshots)
	}
	if v := a.view(); !slices.Equal(v.Snapshots, []string{"new"}) {
		t.Fatalf("page A: snapshots %v, want one", v.Snapshots)
	}
	var rows int
	a.eval(&rows, "document.querySelectorAll('#rows tr').length")
	if rows != len(state) {
		t.Fatalf("page A renders %d rows, want %d", rows, len(state))
	}
}
