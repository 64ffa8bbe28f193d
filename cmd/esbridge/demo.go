package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

//go:embed demo.html
var demoPage []byte

// A demo is an embedded NATS server with JetStream, a generator of live
// messages on a few subjects, and the route /demo that serves them.
type demo struct {
	srv    *server.Server
	nc     *nats.Conn
	dir    string
	route  routeFlag
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startDemo(ctx context.Context, logger *slog.Logger) (*demo, error) {
	dir, err := os.MkdirTemp("", "esbridge-demo-")
	if err != nil {
		return nil, err
	}
	d := &demo{dir: dir}
	d.srv, err = server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true,
	})
	if err != nil {
		d.close()
		return nil, err
	}
	d.srv.Start()
	if !d.srv.ReadyForConnections(10 * time.Second) {
		d.close()
		return nil, fmt.Errorf("embedded NATS server did not start")
	}
	if d.nc, err = nats.Connect(d.srv.ClientURL()); err != nil {
		d.close()
		return nil, err
	}
	js, err := jetstream.New(d.nc)
	if err != nil {
		d.close()
		return nil, err
	}
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: "DEMO", Subjects: []string{"demo.>"}, MaxMsgs: 100_000,
	})
	if err != nil {
		d.close()
		return nil, err
	}
	u, err := url.Parse(fmt.Sprintf("jetstream://%s/DEMO?format=envelope", d.srv.Addr()))
	if err != nil {
		d.close()
		return nil, err
	}
	d.route = routeFlag{path: "/demo", url: u, public: true, given: "/demo=" + u.String()} // its page has no token

	genCtx, cancel := context.WithCancel(ctx)
	d.cancel = cancel
	d.wg.Go(func() { generate(genCtx, js, logger) })
	logger.Info("demo: embedded NATS server with JetStream", "url", d.srv.ClientURL(), "stream", "DEMO")
	return d, nil
}

// page serves the demo page.
func (d *demo) page() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(demoPage)
	})
}

func (d *demo) close() {
	if d.cancel != nil {
		d.cancel()
	}
	d.wg.Wait()
	if d.nc != nil {
		d.nc.Close()
	}
	if d.srv != nil {
		d.srv.Shutdown()
		d.srv.WaitForShutdown()
	}
	os.RemoveAll(d.dir)
}

// generate publishes an order flow, a few messages a second: orders are
// created, paid and shipped, each step on its own subject.
func generate(ctx context.Context, js jetstream.JetStream, logger *slog.Logger) {
	items := []string{"espresso beans", "pour-over kettle", "burr grinder", "paper filters", "ceramic dripper", "travel mug"}
	cities := []string{"Lisbon", "Oslo", "Kyoto", "Austin", "Nairobi", "Lyon", "Recife", "Tallinn"}
	type order struct {
		ID    string  `json:"order"`
		Item  string  `json:"item"`
		Qty   int     `json:"qty"`
		Total float64 `json:"total"`
		City  string  `json:"city"`
		Step  string  `json:"step"`
	}
	var open []order
	next := 1000
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(200+rand.IntN(600)) * time.Millisecond):
		}
		var o order
		subject := "demo.orders"
		if len(open) == 0 || rand.IntN(3) == 0 {
			next++
			qty := 1 + rand.IntN(3)
			o = order{ID: fmt.Sprintf("A-%d", next), Item: items[rand.IntN(len(items))], Qty: qty,
				Total: float64(qty*(900+rand.IntN(4000))) / 100, City: cities[rand.IntN(len(cities))], Step: "created"}
			open = append(open, o)
		} else {
			i := rand.IntN(len(open))
			o = open[i]
			switch o.Step {
			case "created":
				o.Step, subject = "paid", "demo.payments"
				open[i] = o
			default:
				o.Step, subject = "shipped", "demo.shipments"
				open = append(open[:i], open[i+1:]...)
			}
		}
		data, _ := json.Marshal(o)
		if _, err := js.Publish(ctx, subject, data); err != nil && ctx.Err() == nil {
			logger.Warn("demo: publish failed", "err", err)
		}
	}
}
