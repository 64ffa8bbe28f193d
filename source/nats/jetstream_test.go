package nats

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/esbridge/esbridge/bridge"
	"github.com/esbridge/esbridge/internal/brokertest"
	"github.com/esbridge/esbridge/internal/poll"
)

// createStream creates the stream ORDERS of subjects orders.> and returns
// a JetStream context for publishing to it.
func createStream(t *testing.T, ts *testServer, maxMsgs int64) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(ts.conn())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}, MaxMsgs: maxMsgs})
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// publish publishes messages "m<first>".."m<first+n-1>" on subject. Each
// carries a message ID, so a publish whose acknowledgement was lost (as
// one sent just after a server restart can be) is tried again without
// storing it twice.
func publish(t *testing.T, js jetstream.JetStream, subject string, first, n int) {
	t.Helper()
	for i := first; i < first+n; i++ {
		m := nats.NewMsg(subject)
		m.Data = fmt.Appendf(nil, "m%d", i)
		m.Header.Set("N", fmt.Sprint(i))
		id := jetstream.WithMsgID(subject + "/" + fmt.Sprint(i))
		poll.UntilNil(t, 10*time.Second, "publishing "+string(m.Data), func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := js.PublishMsg(ctx, m, id)
			return err
		})
	}
}

// publishedHeaders returns the headers publish gives message n on subject.
func publishedHeaders(subject string, n uint64) []bridge.Header {
	return []bridge.Header{{Key: "N", Value: fmt.Sprint(n)}, {Key: "Nats-Msg-Id", Value: subject + "/" + fmt.Sprint(n)}}
}

// read reads n messages and checks that their offsets are want, and
// Position after each.
func read(t *testing.T, r bridge.Reader, want ...uint64) {
	t.Helper()
	for _, seq := range want {
		m := brokertest.Next(t, r)
		if m.Offset != seq || m.Partition != 0 || string(m.Data) != fmt.Sprintf("m%d", seq) || m.Subject == "" ||
			m.Time.IsZero() || !slices.Equal(m.Headers, publishedHeaders(m.Subject, seq)) {
			t.Fatalf("got %+v, want offset %d", m, seq)
		}
		if p := r.Position(); !slices.Equal(p, bridge.Position{seq + 1}) {
			t.Fatalf("Position after %d = %v", seq, p)
		}
	}
}

func seqs(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func TestStreamStarts(t *testing.T) {
	ts := runServer(t)
	js := createStream(t, ts, 0)
	s := ts.source(Config{Stream: "ORDERS"})
	if got, want := s.Info(), (bridge.Info{Stream: "jetstream/ORDERS", History: true, Partitions: 1, FirstOffset: 1, OffsetName: "sequence", Subject: ">"}); got != want {
		t.Fatalf("Info = %+v, want %+v", got, want)
	}

	empty := brokertest.Open(t, s, bridge.Start{Earliest: true})
	if p := empty.Position(); !slices.Equal(p, bridge.Position{1}) {
		t.Fatalf("earliest of an empty stream: Position = %v", p)
	}
	publish(t, js, "orders.a", 1, 5)
	read(t, empty, seqs(1, 5)...)

	latest := brokertest.Open(t, s, bridge.Start{})
	if p := latest.Position(); !slices.Equal(p, bridge.Position{6}) {
		t.Fatalf("latest: Position = %v", p)
	}
	brokertest.ExpectNothing(t, latest) // and Next goes on after ctx's error
	publish(t, js, "orders.b", 6, 3)
	read(t, latest, 6, 7, 8)
	brokertest.ExpectNothing(t, latest)

	earliest := brokertest.Open(t, s, bridge.Start{Earliest: true})
	if p := earliest.Position(); !slices.Equal(p, bridge.Position{1}) {
		t.Fatalf("earliest: Position = %v", p)
	}
	read(t, earliest, seqs(1, 8)...)

	at4 := brokertest.Open(t, s, bridge.Start{Position: bridge.Position{4}})
	if p := at4.Position(); !slices.Equal(p, bridge.Position{4}) {
		t.Fatalf("at 4: Position = %v", p)
	}
	read(t, at4, seqs(4, 8)...)
	brokertest.ExpectNothing(t, at4)

	// At the head, a reader waits; beyond it, Open refuses.
	if _, err := s.Open(context.Background(), bridge.Start{Position: bridge.Position{10}}); !errors.Is(err, bridge.ErrAhead) {
		t.Fatalf("Open at 10, the last being 8: %v, want ErrAhead", err)
	}
	head := brokertest.Open(t, s, bridge.Start{Position: bridge.Position{9}})
	brokertest.ExpectNothing(t, head)
	publish(t, js, "orders.c", 9, 2)
	read(t, head, 9, 10)
	read(t, at4, 9, 10)

	for _, p := range []bridge.Position{{1, 2}, {0}, {}} {
		if _, err := s.Open(context.Background(), bridge.Start{Position: p}); err == nil {
			t.Errorf("Open at %v succeeded", p)
		}
	}

	// A closed reader returns an error, not a hang.
	at4.Close()
	if _, err := at4.Next(context.Background()); err == nil {
		t.Error("Next after Close succeeded")
	}
}

func TestStreamFilter(t *testing.T) {
	ts := runServer(t)
	js := createStream(t, ts, 0)
	for i := uint64(1); i <= 10; i++ {
		publish(t, js, fmt.Sprintf("orders.%d", i%2), int(i), 1)
	}
	s := ts.source(Config{Stream: "ORDERS", Subject: "orders.1"})
	if got := s.Info().Stream; got != "jetstream/ORDERS?subject=orders.1" {
		t.Fatalf("Info().Stream = %q", got)
	}
	r := brokertest.Open(t, s, bridge.Start{Earliest: true})
	read(t, r, 1, 3, 5, 7, 9)
	brokertest.ExpectNothing(t, r)
	r = brokertest.Open(t, s, bridge.Start{Position: bridge.Position{4}})
	read(t, r, 5, 7, 9)
	r = brokertest.Open(t, s, bridge.Start{})
	if p := r.Position(); !slices.Equal(p, bridge.Position{11}) {
		t.Fatalf("latest: Position = %v", p)
	}
	publish(t, js, "orders.0", 11, 1)
	publish(t, js, "orders.1", 12, 1)
	read(t, r, 12)
}

func TestStreamExpired(t *testing.T) {
	ts := runServer(t)
	js := createStream(t, ts, 5)
	publish(t, js, "orders.x", 1, 20)
	s := ts.source(Config{Stream: "ORDERS"})
	for _, p := range []uint64{1, 3, 15} {
		_, err := s.Open(context.Background(), bridge.Start{Position: bridge.Position{p}})
		var exp *bridge.ExpiredError
		if !errors.As(err, &exp) || !errors.Is(err, bridge.ErrExpired) {
			t.Errorf("Open at %d: %v, want an ExpiredError", p, err)
		} else if !slices.Equal(exp.Resume, bridge.Position{16}) {
			t.Errorf("Open at %d: Resume = %v, want [16], the first sequence held", p, exp.Resume)
		}
	}
	read(t, brokertest.Open(t, s, bridge.Start{Position: bridge.Position{16}}), seqs(16, 20)...)
	read(t, brokertest.Open(t, s, bridge.Start{Earliest: true}), seqs(16, 20)...)
	r := brokertest.Open(t, s, bridge.Start{Position: bridge.Position{21}})
	publish(t, js, "orders.x", 21, 1)
	read(t, r, 21)
}

func TestStreamUnavailable(t *testing.T) {
	ts := runServer(t)
	s := ts.source(Config{Stream: "MISSING"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.Open(ctx, bridge.Start{}); !errors.Is(err, bridge.ErrUnavailable) {
		t.Fatalf("missing stream: %v, want ErrUnavailable", err)
	}

	ts.Stop()
	// waitStatus follows the live connection: open on it.
	waitStatus(t, s, nats.RECONNECTING)
	if _, err := s.Open(ctx, bridge.Start{Live: true}); !errors.Is(err, bridge.ErrUnavailable) {
		t.Fatalf("server down: %v, want ErrUnavailable", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Open waited for its deadline")
	}
}

// TestStreamRestart restarts the server while a reader has messages
// buffered and is waiting for more; reading as the bridge does (reopening
// at Position after an error), it gets every message once, in order.
func TestStreamRestart(t *testing.T) {
	brokertest.CheckLeaks(t)
	ts := runServer(t)
	js := createStream(t, ts, 0)
	publish(t, js, "orders.x", 1, 10)
	s := ts.source(Config{Stream: "ORDERS"})
	r := brokertest.Open(t, s, bridge.Start{Earliest: true})
	read(t, r, seqs(1, 5)...)

	done := make(chan error)
	var last atomic.Uint64 // the offset of the last message read
	go func() {
		defer close(done)
		reopens := 0
		for want := uint64(6); want <= 20; {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			m, err := r.Next(ctx)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					done <- fmt.Errorf("no message %d", want)
					return
				}
				t.Logf("Next: %v; reopening at %v", err, r.Position())
				p := r.Position()
				r.Close()
				if r, err = reopen(s, p); err != nil {
					done <- err
					return
				}
				reopens++
				continue
			}
			if m.Offset != want {
				done <- fmt.Errorf("got offset %d, want %d", m.Offset, want)
				return
			}
			last.Store(m.Offset)
			want++
		}
		r.Close()
		t.Logf("%d reopens", reopens)
	}()

	// Let the reader read 6..10, and wait for more.
	poll.Until(t, 10*time.Second, "the reader has read 6..10", func() bool { return last.Load() == 10 })
	ts.Stop()
	ts.Start()
	waitStatus(t, s, nats.CONNECTED)
	waitStatusConn(t, js.Conn())
	publish(t, js, "orders.x", 11, 10)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// reopen opens s at p, retrying while unavailable, as the bridge does.
func reopen(s *Source, p bridge.Position) (bridge.Reader, error) {
	var r bridge.Reader
	var err error
	poll.Wait(20*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err = s.Open(ctx, bridge.Start{Position: p})
		return !errors.Is(err, bridge.ErrUnavailable) // done, or failed for good
	})
	if err != nil {
		return nil, fmt.Errorf("reopen at %v: %w", p, err)
	}
	return r, nil
}

// TestStreamConcurrent reads with many readers on one source at once,
// while messages are published.
func TestStreamConcurrent(t *testing.T) {
	brokertest.CheckLeaks(t)
	ts := runServer(t)
	js := createStream(t, ts, 0)
	publish(t, js, "orders.x", 1, 50)
	s := ts.source(Config{Stream: "ORDERS"})
	const readers, last = 16, 100

	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for i := range readers {
		wg.Go(func() {
			start := bridge.Start{Position: bridge.Position{uint64(1 + i*3)}}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r, err := s.Open(ctx, start)
			if err != nil {
				errs <- err
				return
			}
			defer r.Close()
			for want := start.Position[0]; want <= last; want++ {
				m, err := r.Next(ctx)
				if err != nil {
					errs <- fmt.Errorf("reader %d at %d: %w", i, want, err)
					return
				}
				if m.Offset != want {
					errs <- fmt.Errorf("reader %d: got %d, want %d", i, m.Offset, want)
					return
				}
			}
		})
	}
	publish(t, js, "orders.y", 51, last-50)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// Closed readers leave no consumer behind.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "ORDERS")
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Consumers; n != 0 {
		t.Errorf("%d consumers left", n)
	}
}

// TestStreamReset deletes the stream under a waiting reader and creates it
// again at once, with as many messages: the reader, which nats.go would
// otherwise move on to the new stream at its old sequence, returns
// ErrReset, and a reader of the new stream tells another incarnation.
func TestStreamReset(t *testing.T) {
	ts := runServer(t)
	js := createStream(t, ts, 0)
	publish(t, js, "orders.x", 1, 3)
	s := ts.source(Config{Stream: "ORDERS"})
	r := brokertest.Open(t, s, bridge.Start{Earliest: true})
	read(t, r, 1, 2, 3)
	old := r.(bridge.Incarnated).Incarnation()
	if old == 0 {
		t.Fatal("Incarnation = 0")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, "ORDERS"); err != nil {
		t.Fatal(err)
	}
	createStream(t, ts, 0)
	publish(t, js, "orders.x", 1, 6)
	start := time.Now()
	if m, err := r.Next(ctx); !errors.Is(err, bridge.ErrReset) {
		t.Fatalf("Next after the stream was created again: %+v, %v; want ErrReset", m, err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("ErrReset after %v, want within seconds (checks every second)", d)
	}
	r2 := brokertest.Open(t, s, bridge.Start{Earliest: true})
	if inc := r2.(bridge.Incarnated).Incarnation(); inc == old || inc == 0 {
		t.Errorf("Incarnation of the new stream = %d, the old one's %d", inc, old)
	}
	read(t, r2, seqs(1, 6)...)
}

// TestStreamSkipped lets retention delete messages that a reader has not
// read yet (beyond what nats.go fetched ahead for it): the reader returns
// an ExpiredError counting exactly the messages it skipped, at the first
// one held. A filtered reader skips other subjects' sequences with no
// error.
func TestStreamSkipped(t *testing.T) {
	ts := runServer(t)
	js := createStream(t, ts, 0)
	publish(t, js, "orders.x", 1, 1)
	s := ts.source(Config{Stream: "ORDERS"})
	r := brokertest.Open(t, s, bridge.Start{Earliest: true})
	read(t, r, 1)
	filtered := brokertest.Open(t, ts.source(Config{Stream: "ORDERS", Subject: "orders.y"}), bridge.Start{Earliest: true})

	// Far more than nats.go fetches ahead (500), then only 100 held.
	publish(t, js, "orders.x", 2, 3000)
	publish(t, js, "orders.y", 3002, 1)
	publish(t, js, "orders.y", 3003, 1)
	keepLast(t, js, 100)
	readAccounted(t, s, r, 2, 2904, 3001)
	for _, want := range []uint64{3002, 3003} {
		if m := brokertest.Next(t, filtered); m.Offset != want {
			t.Fatalf("filtered: got %+v, want sequence %d", m, want)
		}
	}
}

// TestStreamSkippedFiltered lets retention delete messages of a filter
// that a filtered reader has not read yet, among other subjects': the
// reader returns an ExpiredError counting exactly the filter's messages it
// lost.
func TestStreamSkippedFiltered(t *testing.T) {
	ts := runServer(t)
	js := createStream(t, ts, 0)
	publish(t, js, "orders.z", 1, 1000)
	s := ts.source(Config{Stream: "ORDERS", Subject: "orders.z"})
	r := brokertest.Open(t, s, bridge.Start{Earliest: true})
	read(t, r, 1)
	publish(t, js, "orders.w", 1001, 10)
	keepLast(t, js, 100)
	readAccounted(t, s, r, 2, 911, 1000)
}

// keepLast makes the stream ORDERS keep only its last n messages.
func keepLast(t *testing.T, js jetstream.JetStream, n int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.UpdateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}, MaxMsgs: n}); err != nil {
		t.Fatal(err)
	}
}

// readAccounted reads the messages of s in order from sequence next to
// last, as the bridge does: from r, and after each ExpiredError from a
// reader opened at its Resume. Every message must be received or counted
// by the ExpiredError just before the next one received (retention may
// delete in steps, while the reader reads), there must be at least one,
// and every message from held on must be received.
func readAccounted(t *testing.T, s bridge.Source, r bridge.Reader, next, held, last uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	expired := 0
	for next <= last {
		m, err := r.Next(ctx)
		var exp *bridge.ExpiredError
		if errors.As(err, &exp) {
			if len(exp.Resume) != 1 || exp.Resume[0] > held || exp.Missed != exp.Resume[0]-next {
				t.Fatalf("after %d: %+v, want a Resume at most %d and Missed counting up to it", next-1, exp, held)
			}
			expired++
			next = exp.Resume[0]
			r = brokertest.Open(t, s, bridge.Start{Position: exp.Resume})
			continue
		}
		if err != nil || m.Offset != next {
			t.Fatalf("got %+v, %v; want sequence %d", m, err, next)
		}
		next++
	}
	if expired == 0 {
		t.Fatal("no ExpiredError, though retention deleted messages the reader had not read")
	}
}

// TestStreamDeleted deletes the stream under a waiting reader: Next returns
// an error, not a hang, and Open returns ErrUnavailable.
func TestStreamDeleted(t *testing.T) {
	ts := runServer(t)
	js := createStream(t, ts, 0)
	publish(t, js, "orders.x", 1, 2)
	s := ts.source(Config{Stream: "ORDERS"})
	r := brokertest.Open(t, s, bridge.Start{Earliest: true})
	read(t, r, 1, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, "ORDERS"); err != nil {
		t.Fatal(err)
	}
	if m, err := r.Next(ctx); err == nil || ctx.Err() != nil {
		t.Fatalf("Next after the stream was deleted: %+v, %v", m, err)
	} else {
		t.Logf("Next: %v", err)
	}
	if p := r.Position(); !slices.Equal(p, bridge.Position{3}) {
		t.Fatalf("Position = %v", p)
	}
	if _, err := r.Next(ctx); err == nil {
		t.Fatal("Next after its error succeeded")
	}
	if _, err := s.Open(ctx, bridge.Start{Position: r.Position()}); !errors.Is(err, bridge.ErrUnavailable) {
		t.Fatalf("Open: %v, want ErrUnavailable", err)
	}
}

var _ bridge.Subjected = (*Source)(nil)

// StreamSubjects tells the JetStream stream's subjects once a reader has
// read its info, follows a change of them while a reader is open, and
// tells none for a mirror (whose messages have its origin's subjects) or
// for core NATS.
func TestStreamSubjects(t *testing.T) {
	ts := runServer(t)
	js := createStream(t, ts, 0)
	s := ts.source(Config{Stream: "ORDERS"})
	if got := s.StreamSubjects(); got != nil {
		t.Errorf("StreamSubjects before Open = %q, want nil", got)
	}
	brokertest.Open(t, s, bridge.Start{})
	if got := s.StreamSubjects(); !slices.Equal(got, []string{"orders.>"}) {
		t.Errorf("StreamSubjects = %q, want [orders.>]", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.UpdateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>", "audit.*"}}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "StreamSubjects tells the new subjects", func() bool {
		return slices.Equal(s.StreamSubjects(), []string{"orders.>", "audit.*"})
	})

	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "COPY", Mirror: &jetstream.StreamSource{Name: "ORDERS"}}); err != nil {
		t.Fatal(err)
	}
	mirror := ts.source(Config{Stream: "COPY"})
	brokertest.Open(t, mirror, bridge.Start{})
	if got := mirror.StreamSubjects(); got != nil {
		t.Errorf("StreamSubjects of a mirror = %q, want nil", got)
	}

	core := ts.source(Config{Subject: "orders.>"})
	brokertest.Open(t, core, bridge.Start{})
	if got := core.StreamSubjects(); got != nil {
		t.Errorf("StreamSubjects of core NATS = %q, want nil", got)
	}
}
