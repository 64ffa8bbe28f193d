package esource

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A stream ends cleanly at the deadline of its request's context, on a
// connection taken over from net/http (HTTP/1.1) as through the
// ResponseWriter (HTTP/2), and a client that resumes with its last ID gets
// every later event once.
func TestDeadlineEndsStream(t *testing.T) {
	for _, mode := range []string{"HTTP/1.1", "HTTP/1.1 taken over", "HTTP/2.0"} {
		t.Run(mode, func(t *testing.T) {
			checkNoLeaks(t)
			proto, takeover := strings.CutSuffix(mode, " taken over")
			// The write timeout passes between the last event and the
			// end, which still ends the body cleanly.
			opts := []Option{WithWriteTimeout(100 * time.Millisecond), WithHeartbeat(50 * time.Millisecond)}
			if takeover {
				opts = append(opts, WithConnTakeover())
			}
			es := newSource(t, opts...)
			var ttl atomic.Int64 // of the requests' contexts
			ttl.Store(int64(300 * time.Millisecond))
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ctx, cancel := context.WithTimeout(r.Context(), time.Duration(ttl.Load()))
				defer cancel()
				es.ServeHTTP(w, r.WithContext(ctx))
			}))
			if proto == "HTTP/2.0" {
				srv.EnableHTTP2 = true
				srv.StartTLS()
			} else {
				srv.Start()
			}
			t.Cleanup(srv.Close)

			s := connect(t, srv.Client(), srv.URL, "")
			if s.resp.Proto != proto {
				t.Fatalf("the response is %s, want %s", s.resp.Proto, proto)
			}
			waitClients(t, es, 1)
			publishN(t, es, 1, 3)
			s.expect(1, 3)
			rest := s.end()
			if s.err != nil {
				t.Fatalf("the stream ended with %v, want a clean end", s.err)
			}
			last := 3
			for _, ev := range rest {
				if ev.LastEventID != strconv.Itoa(last+1) {
					t.Fatalf("after event %d the stream sent %+v", last, ev)
				}
				last++
			}
			publishN(t, es, 4, 5)
			ttl.Store(int64(time.Minute))
			r := connect(t, srv.Client(), srv.URL, strconv.Itoa(last))
			r.expect(last+1, 5)
		})
	}
}

// TestIdleHTTP2StreamOutlivesWriteTimeout keeps an HTTP/2 stream idle for
// three write timeouts, with a heartbeat longer than the write timeout
// (shortened to MaxHeartbeat) and with none: net/http resets an HTTP/2
// stream whose write deadline passes, written to or not.
func TestIdleHTTP2StreamOutlivesWriteTimeout(t *testing.T) {
	for _, heartbeat := range []time.Duration{time.Hour, 0} {
		t.Run("heartbeat "+heartbeat.String(), func(t *testing.T) {
			checkNoLeaks(t)
			const timeout = 100 * time.Millisecond
			es := newSource(t, WithWriteTimeout(timeout), WithHeartbeat(heartbeat))
			srv := httptest.NewUnstartedServer(es)
			srv.EnableHTTP2 = true
			srv.StartTLS()
			t.Cleanup(srv.Close)
			s := connect(t, srv.Client(), srv.URL, "")
			waitClients(t, es, 1)
			publishN(t, es, 1, 1)
			s.expect(1, 1)
			idle := time.NewTimer(3 * timeout)
			<-idle.C // the idle spell is what is tested
			publishN(t, es, 2, 2)
			s.expect(2, 2)
		})
	}
}
