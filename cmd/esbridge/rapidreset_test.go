package main

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/esbridge/esbridge/internal/h2reset"
	"github.com/esbridge/esbridge/internal/poll"
	"github.com/esbridge/esbridge/internal/tlstest"
)

// An HTTP/2 rapid reset on a public stream route, tens of thousands of
// streams opened and reset at once, leaves no stream behind: once it
// stops, the route has its one real client again, which was served all
// along and still is. (Its cost in memory, and the real client's latency
// meanwhile, are bench scenario X's.)
func TestRapidReset(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	pub, stream := ns.jetStream("RAPID")
	dir := t.TempDir()
	cert := tlstest.New(t, "esbridge-rapid")
	cert.Write(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	b := startBridge(t, "-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0", "-route", "/orders="+stream,
		"-tls-cert", filepath.Join(dir, "cert.pem"), "-tls-key", filepath.Join(dir, "key.pem"))
	c := openStream(t, tlsClient(t, false, cert), "https://"+b.Addr+"/orders", nil)
	if c.resp.ProtoMajor != 2 {
		t.Fatalf("the client's stream is %s, want HTTP/2", c.resp.Proto)
	}
	c.syncLive(pub.publish)

	ctx, stop := context.WithCancel(context.Background())
	var counts h2reset.Counts
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { h2reset.Attack(ctx, b.Addr, "/orders", &counts) })
	}
	poll.Until(t, waitFor, "50,000 streams are reset", func() bool { return counts.Streams.Load() >= 50000 })
	pub.publish("during")
	c.expectData("during")
	stop()
	wg.Wait()
	t.Logf("%d streams reset over %d connections", counts.Streams.Load(), counts.Conns.Load())

	b.waitMetric(`esbridge_clients{route="/orders"}`, "1, the real client alone", equals(1))
	pub.publish("after")
	c.expectData("after")
}
