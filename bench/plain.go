// This file is the baseline of scenario W, lib "plain": the simplest honest
// shared-log fan-out on plain net/http. Each event is encoded once into a
// ring of the newest events under a mutex; publishing closes a channel to
// wake every connection, once it has unlocked the mutex: closed under it,
// the channel wakes thousands of connections into a held mutex, which made
// the p99 of 15,000 clients 1.2 to 4.8 times as long in one run here. Each
// connection is net/http's handler goroutine, with a cursor into the ring:
// it copies what it has not sent, writes it to the ResponseWriter and
// flushes. It does no more than that: no write deadlines, heartbeats,
// Last-Event-ID or notice of a client that fell behind the ring (it skips
// ahead).

package main

import (
	"net/http"
	"strconv"
	"sync"
)

type plainServer struct {
	mu   sync.Mutex
	ring [][]byte      // event seq is ring[seq%len(ring)]
	next uint64        // seq of the next event
	wake chan struct{} // closed and replaced by publish
	done chan struct{} // closed by close
}

func newPlainServer(backlog int) *plainServer {
	return &plainServer{
		ring: make([][]byte, backlog),
		wake: make(chan struct{}),
		done: make(chan struct{}),
	}
}

func (p *plainServer) publish(id string, data []byte) {
	b := make([]byte, 0, len("id: \ndata: \n\n")+len(id)+len(data))
	b = append(b, "id: "...)
	b = append(b, id...)
	b = append(b, "\ndata: "...)
	b = append(b, data...) // the bench's data has no newlines
	b = append(b, "\n\n"...)
	p.mu.Lock()
	p.ring[p.next%uint64(len(p.ring))] = b
	p.next++
	wake := p.wake
	p.wake = make(chan struct{})
	p.mu.Unlock()
	close(wake)
}

func (p *plainServer) close() { close(p.done) }

func (p *plainServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write([]byte("retry: " + strconv.Itoa(3000) + "\n\n")); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}
	p.mu.Lock()
	cursor := p.next
	p.mu.Unlock()
	var batch [][]byte
	for {
		p.mu.Lock()
		if n := uint64(len(p.ring)); p.next-cursor > n {
			cursor = p.next - n
		}
		batch = batch[:0]
		for ; cursor < p.next; cursor++ {
			batch = append(batch, p.ring[cursor%uint64(len(p.ring))])
		}
		wake := p.wake
		p.mu.Unlock()

		if len(batch) == 0 {
			select {
			case <-wake:
				continue
			case <-p.done:
			case <-r.Context().Done():
			}
			return
		}
		for _, b := range batch {
			if _, err := w.Write(b); err != nil {
				return
			}
		}
		clear(batch)
		if err := rc.Flush(); err != nil {
			return
		}
	}
}
