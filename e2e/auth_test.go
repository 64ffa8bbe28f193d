package e2e

import (
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/esbridge/esbridge/internal/poll"
)

// At the token's expiry esbridge ends the stream; a native EventSource
// reconnects by itself with Last-Event-ID and the cookie it has then. Page
// A's cookie is refreshed before the expiry: it goes on with every message
// exactly once, in order, across the reconnect, while messages are
// published all along. Page B's is not: its stream ends, the reconnect
// gets 401, and the EventSource is closed for good.
func TestAuthExpiryResume(t *testing.T) {
	t.Parallel()
	br := launchBrowser(t)
	stream, publish := newJetStream(t)
	secret := []byte("0123456789abcdef0123456789abcdef")
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	b := startBridge(t, "-jwt-secret-file", secretFile, "-route", "/a="+stream, "-route", "/b="+stream)
	b.waitReady()
	px := startProxy(t, b.Addr)
	host, err := url.Parse(px.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	token := func(route string, exp time.Time) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"routes": []string{route}, "exp": exp.Unix()}).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// Each page's cookie is sent only with its route's requests.
	tokenCookie := func(route, value string) cookie {
		return cookie{Name: "esbridge_token", Value: value, Domain: host.Hostname(), Path: route}
	}

	// Seven to eight seconds (JWT times are whole seconds): time for the
	// pages to open on a busy machine before the cookie is refreshed.
	exp := time.Now().Add(8 * time.Second).Truncate(time.Second)
	br.addCookies(tokenCookie("/a", token("/a", exp)), tokenCookie("/b", token("/b", exp)))

	// Messages all along, from before the pages open to after the expiry
	// and the reconnects.
	var mu sync.Mutex
	published := 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			mu.Lock()
			published++
			n := published
			mu.Unlock()
			if err := publish(0, "m"+strconv.Itoa(n)); err != nil {
				t.Error(err)
				return
			}
		}
	})
	stopped := false
	stopPublishing := func() int {
		if !stopped {
			close(stop)
			wg.Wait()
			stopped = true
		}
		mu.Lock()
		defer mu.Unlock()
		return published
	}
	t.Cleanup(func() { stopPublishing() })

	pa := br.open(px.pageURL("/a"))
	pb := br.open(px.pageURL("/b"))
	poll.Until(t, waitFor, "both pages receive messages", func() bool {
		return count(pa.recorded(), "event") > 0 && count(pb.recorded(), "event") > 0
	})
	// Page A's cookie is refreshed before the expiry (a page would do it
	// with a fetch to its login service, or document.cookie).
	if time.Now().After(exp.Add(-time.Second)) {
		t.Fatalf("the pages took until %v to open, too close to the token's expiry %v", time.Now(), exp)
	}
	br.addCookies(tokenCookie("/a", token("/a", time.Now().Add(time.Hour))))

	poll.Until(t, waitFor, "page B's EventSource is closed for good", func() bool { return closedForGood(pb.recorded()) })
	poll.Until(t, waitFor, "page A reconnected and receives messages again", func() bool {
		rs := pa.recorded()
		return count(rs, "open") >= 2 && rs[len(rs)-1].Kind == "event"
	})
	n := stopPublishing()
	last := "m" + strconv.Itoa(n)
	poll.Until(t, waitFor, "page A has "+last, func() bool {
		rs := pa.recorded()
		return len(rs) > 0 && rs[len(rs)-1].Data == last
	})

	// Page A: m1..mN exactly once, in order, with one reconnect.
	rsA := pa.recorded()
	i := 0
	for _, r := range rsA {
		if r.Kind != "event" {
			continue
		}
		i++
		if want := "m" + strconv.Itoa(i); r.Type != "message" || r.Data != want {
			t.Fatalf("page A: event %d is %v, want message %q; every message once, in order:\n%s", i, r, want, describe(rsA))
		}
	}
	if i != n || count(rsA, "open") != 2 || count(rsA, "error") != 1 || closedForGood(rsA) {
		t.Errorf("page A: %d messages of %d, %d opens, %d errors; want every message, 2 opens, 1 error (the end at expiry):\n%s",
			i, n, count(rsA, "open"), count(rsA, "error"), describe(rsA))
	}

	t.Logf("page A: %d messages, one reconnect; page B: closed after %d", n, count(pb.recorded(), "event"))

	// Page B: a prefix of the messages, in order, then closed.
	rsB := pb.recorded()
	j := 0
	for _, r := range rsB {
		if r.Kind == "event" {
			j++
			if want := "m" + strconv.Itoa(j); r.Data != want {
				t.Fatalf("page B: event %d is %v, want %q:\n%s", j, r, want, describe(rsB))
			}
		}
	}
	if count(rsB, "open") != 1 {
		t.Errorf("page B opened %d times, want once:\n%s", count(rsB, "open"), describe(rsB))
	}

	// What the proxy saw: each page's first stream ended at the expiry,
	// not before; A came back with its last ID and got 200, B got 401.
	var statuses = map[string][]int{}
	for _, s := range px.logged() {
		statuses[s.path] = append(statuses[s.path], s.status)
		if _, end := s.state(); s.status == 200 && s.lastEventID == "" && (end.IsZero() || end.Before(exp)) {
			t.Errorf("the first stream of %s ended at %v, want at the token's expiry %v", s.path, end, exp)
		}
		if s.status == 200 && s.lastEventID != "" && s.path != "/a" {
			t.Errorf("a stream of %s was resumed", s.path)
		}
	}
	if a, b := statuses["/a"], statuses["/b"]; len(a) != 2 || a[1] != 200 || len(b) != 2 || b[1] != 401 {
		t.Errorf("the streams' statuses: /a %v, /b %v; want [200 200] and [200 401]:\n%s", a, b, px.describe())
	}
}
