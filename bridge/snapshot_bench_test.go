package bridge

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"testing"
)

// BenchmarkSnapshotTableMemory builds a route's snapshot table of 100,000
// keys of 200-byte values, as the live reader writes it (raw format,
// keyed by the Kafka key), then writes every key three times more, and
// reports the heap it holds against the table's wire bytes (keys and
// encoded events): the target is at most 2.
//
//	go test ./bridge -run '^$' -bench SnapshotTableMemory -benchtime 1x
func BenchmarkSnapshotTableMemory(b *testing.B) {
	for _, format := range []string{FormatRaw, FormatEnvelope} {
		b.Run(format, func(b *testing.B) { benchTableMemory(b, format) })
	}
}

func benchTableMemory(b *testing.B, format string) {
	rounds := 4
	if os.Getenv("ROUNDS") == "1" {
		rounds = 1
	}
	const keys, size = 100_000, 200
	tr := translator{opts: Options{Snapshot: SnapshotKey, Format: format}, info: Info{History: true, Keyed: true}}
	value := bytes.Repeat([]byte("x"), size)
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		tab := &snapTable{tr: tr, maxKeys: DefaultSnapshotMaxKeys, maxBytes: DefaultSnapshotMaxBytes, state: snapReady, gen: newSnapGen()}
		for round := range rounds {
			for k := range keys {
				m := Message{Key: fmt.Appendf(nil, "key-%06d", k), Data: value}
				m.Data = append(fmt.Appendf(nil, "%d:", round), value...)
				tab.apply(&m, tr.event("id", &m, nil))
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		var wire int64
		for _, e := range tab.gen.entries {
			if e.dead.Load() == 0 {
				wire += int64(len(e.key) + e.ev.Len())
			}
		}
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/float64(wire), "heap/table")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(wire), "live/table")
		b.ReportMetric(float64(wire)/(1<<20), "table-MiB")
		b.ReportMetric(float64(len(tab.gen.entries))/float64(len(tab.gen.index)), "entries/key")
		runtime.KeepAlive(tab)
	}
}
