package bridge_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/poll"
)

// readerCount follows the JetStream consumers of stream S by their
// advisories, read in the server's order from one subscription, and counts
// the readers they belong to: the bridge names a reader's consumers
// PREFIX_1, PREFIX_2 and so on, as nats.go re-creates an ordered consumer
// (making the new one before the old one is deleted). It counts readers
// beyond those open at the start: how many now, and the most at once.
type readerCount struct {
	mu        sync.Mutex
	consumers map[string]int // live consumers by reader prefix
	initial   map[string]bool
	most      int
}

func countReaders(t *testing.T, js jetstream.JetStream) *readerCount {
	t.Helper()
	c := &readerCount{consumers: map[string]int{}, initial: map[string]bool{}}
	prefix := func(name string) string {
		if i := strings.LastIndexByte(name, '_'); i > 0 {
			return name[:i]
		}
		return name
	}
	sub, err := js.Conn().Subscribe("$JS.EVENT.ADVISORY.CONSUMER.*.S.*", func(m *nats.Msg) {
		tokens := strings.Split(m.Subject, ".")
		kind, p := tokens[4], prefix(tokens[6])
		c.mu.Lock()
		defer c.mu.Unlock()
		switch kind {
		case "CREATED":
			c.consumers[p]++
		case "DELETED":
			if c.consumers[p]--; c.consumers[p] <= 0 {
				delete(c.consumers, p)
			}
		}
		c.most = max(c.most, c.nowLocked())
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	if err := js.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(t.Context(), "S")
	if err != nil {
		t.Fatal(err)
	}
	names := st.ConsumerNames(t.Context())
	for name := range names.Name() {
		c.mu.Lock()
		c.initial[prefix(name)] = true
		c.mu.Unlock()
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	return c
}

// nowLocked is how many readers beyond the initial ones have a consumer.
func (c *readerCount) nowLocked() int {
	n := 0
	for p := range c.consumers {
		if !c.initial[p] {
			n++
		}
	}
	return n
}

// Most is the most readers beyond the initial ones open at once.
func (c *readerCount) Most() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.most
}

// readFrom reads the route's stream after lastID until message m<to>,
// and returns an error unless it gets m<from>..m<to>, once each, in
// order, with no gap.
func readFrom(ctx context.Context, url, lastID string, from, to int) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Last-Event-ID", lastID)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	next, typ := from, ""
	for next <= to {
		line, err := br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("at m%d: %w", next, err)
		}
		name, value, _ := strings.Cut(strings.TrimSuffix(line, "\n"), ": ")
		switch name {
		case "event":
			typ = value
		case "data":
			if typ != "" || value != fmt.Sprintf("m%d", next) {
				return fmt.Errorf("got %s %q, want m%d", typ, value, next)
			}
			next++
		case "":
			typ = ""
		}
	}
	return nil
}

// TestHerd resumes a herd of clients at once, from positions long gone
// from the log, while messages go on: every client gets every message
// after its position once, in order, and the route never has more
// JetStream consumers than its live one and its catch-up readers.
func TestHerd(t *testing.T) {
	const clients, back, live, readers = 300, 1000, 50, 2
	js, addr := jetStream(t)
	url := serveBridge(t, addr, bridge.Config{Backlog: 64}, bridge.Options{CatchUpReaders: readers})
	first := open(t, url, "")
	publish(t, js, 1, back)
	ids := make([]string, back+1)
	for i := 1; i <= back; i++ {
		ids[i] = first.expect(i, i)
	}
	consumers := countReaders(t, js)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for i := range clients {
		k := 1 + rand.IntN(back/2) // the first half: long gone from the log
		wg.Go(func() {
			if err := readFrom(ctx, url, ids[k], k+1, back+live); err != nil {
				t.Errorf("client %d from m%d: %v", i, k, err)
			}
		})
	}
	for i := back + 1; i <= back+live; i++ {
		publish(t, js, i, i)
		time.Sleep(10 * time.Millisecond)
	}
	wg.Wait()
	if m := consumers.Most(); m == 0 || m > readers {
		t.Errorf("%d readers at once for %d resuming clients, want 1 to %d", m, clients, readers)
	}
}

// TestHangUpLeavesNoConsumer resumes clients that hang up at once, over
// and over: every consumer made for them is deleted, whenever they leave.
func TestHangUpLeavesNoConsumer(t *testing.T) {
	js, addr := jetStream(t)
	url := serveBridge(t, addr, bridge.Config{Backlog: 16}, bridge.Options{})
	first := open(t, url, "")
	publish(t, js, 1, 200)
	old := first.expect(1, 1)
	first.expect(2, 200)
	for range 300 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(5000))*time.Microsecond)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.Header.Set("Last-Event-ID", old)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
		cancel()
	}
	var n int
	if !poll.Wait(15*time.Second, func() bool {
		info, err := js.Stream(t.Context(), "S")
		if err != nil {
			t.Fatal(err)
		}
		n = info.CachedInfo().State.Consumers
		return n == 1
	}) {
		t.Errorf("%d consumers on the stream after 15s, want 1, the route's live one", n)
	}
}
