// This file holds the three servers under test, each behind the same tiny
// interface and each used the way its README shows for a simple broadcast.
//
// Buffer choices, for a fair comparison:
//
//   - esource: WithBacklog(-backlog, 65536 by default, well above the
//     publisher's window), WithBacklogBytes(0) so that only the event count
//     bounds the log, WithWriteTimeout(-write-timeout, 5 s). Heartbeat and
//     retry keep their defaults.
//   - r3labs/sse/v2: sse.New(), BufferSize = -backlog (the stream's queue of
//     events, 1024 by default) and AutoReplay = false (by default every
//     event is kept forever in an unbounded replay log and replayed to each
//     new subscriber; its README shows how to turn it off). Each subscriber
//     has a fixed queue of 64 events, with no knob.
//   - tmaxmax/go-sse: &sse.Server{} with its default provider Joe and no
//     replayer, as its README's "Hello world". Joe has no buffers and no
//     knobs: it writes every event to every subscriber in turn.
//
// Scenario W also serves lib "plain" (plain.go), its baseline, with a ring
// of -backlog events. Lib "poller" (poller.go), a prototype with no
// goroutine per idle connection, is run only when named, in -libs or
// -wide-libs; "plain" may be named in -libs too.

package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/esbridge/esbridge/esource"
	r3sse "github.com/r3labs/sse/v2"
	gosse "github.com/tmaxmax/go-sse"
)

// libraries lists the servers under test, in the order they are reported.
var libraries = []string{"esource", "r3labs", "go-sse"}

// optionalLibs are servers that -libs accepts but does not run by default.
var optionalLibs = []string{"poller", "plain"}

// streamPath is the URL path (and query, for r3labs) that every client of
// every server requests.
const streamPath = "/events?stream=bench"

// A server is one SSE library under test: an http.Handler serving the
// stream at streamPath, and a way to broadcast an event to its clients.
// publish may block if the library applies back-pressure; data is not
// reused by the caller.
type server interface {
	http.Handler
	publish(id string, data []byte)
	close()
}

// serverConfig holds the knobs the adapters take.
type serverConfig struct {
	backlog      int
	writeTimeout time.Duration
	flush        time.Duration
	route        routeConfig // the bridge's route, for libs "kafka", "jetstream" and "rabbitmq" (see broker.go)
	tls          bool        // serve HTTPS, HTTP/1.1 and HTTP/2 (see tls.go)
}

// newServer returns the adapter for the library lib.
func newServer(lib string, cfg serverConfig) (server, error) {
	switch lib {
	case "esource":
		es, err := esource.New(
			esource.WithBacklog(cfg.backlog),
			esource.WithBacklogBytes(0),
			esource.WithWriteTimeout(cfg.writeTimeout),
			esource.WithFlushInterval(cfg.flush),
			esource.WithConnTakeover(), // as esbridge runs it
		)
		if err != nil {
			return nil, err
		}
		return esourceServer{es}, nil
	case "r3labs":
		s := r3sse.New()
		s.AutoReplay = false
		s.BufferSize = cfg.backlog
		s.CreateStream("bench")
		return r3labsServer{s}, nil
	case "go-sse":
		return gosseServer{&gosse.Server{}}, nil
	case "plain":
		return newPlainServer(cfg.backlog), nil
	case "poller":
		return newPollerServer(cfg.backlog, cfg.writeTimeout)
	case "kafka":
		return newKafkaServer(cfg)
	case "jetstream":
		return newJetStreamServer(cfg)
	case "rabbitmq":
		return newAMQPServer(cfg)
	}
	return nil, fmt.Errorf("unknown library %q (want one of %v)", lib, libraries)
}

type esourceServer struct{ *esource.EventSource }

func (s esourceServer) publish(id string, data []byte) {
	// Publish fails only for invalid events or after Close.
	_ = s.Publish(esource.Event{ID: id, Data: data})
}

func (s esourceServer) close() { _ = s.Close() }

type r3labsServer struct{ *r3sse.Server }

func (s r3labsServer) publish(id string, data []byte) {
	s.Publish("bench", &r3sse.Event{ID: []byte(id), Data: data})
}

func (s r3labsServer) close() { s.Close() }

type gosseServer struct{ *gosse.Server }

func (s gosseServer) publish(id string, data []byte) {
	m := &gosse.Message{ID: gosse.ID(id)}
	m.AppendData(string(data))
	// Publish fails only after Shutdown.
	_ = s.Publish(m)
}

func (s gosseServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = s.Shutdown(ctx)
}
