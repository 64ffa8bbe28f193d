//go:build linux

// This file is lib "poller", the prototype of issue 21: an SSE fan-out with
// no goroutine per idle connection, to weigh against esource's goroutine
// per connection. Like "plain" (plain.go) it encodes each event once into
// a ring of the newest events; unlike it, a stream's connection is taken
// over from net/http once the request is read, its response head written,
// and then held in a set with no goroutine of its own:
//
//   - A fixed pool of writers, one per GOMAXPROCS, each owning a shard of
//     the connections, wakes on publish and writes each connection what it
//     has not sent, as one HTTP/1.1 chunk, with a non-blocking write(2) on
//     the raw descriptor. A chunk is built once per pass for all the
//     connections at the same cursor, the common case.
//   - A connection that cannot take all its bytes at once (its socket
//     buffer is full) gets a goroutine of its own, which writes the rest
//     with a write deadline of -write-timeout, then what was published
//     meanwhile, and hands the connection back to the pool once it has
//     caught up. A write that times out, or a connection that falls a ring
//     behind, is dropped: closed, so that the client sees its stream end,
//     never a silent skip.
//   - One epoll set, watched by one goroutine (blocked in epoll_wait, which
//     holds an OS thread), learns of peers that close (EPOLLRDHUP).
//   - One ticker sends a heartbeat to every connection that had no write
//     since the tick before.
//
// It serves HTTP/1.1 only: an HTTP/2 stream cannot be taken over, nor can
// a TLS connection be written with write(2). Nothing else of esource's is
// here: no Last-Event-ID, retry hints only in the first chunk, no notice of
// a gap.

package main

import (
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	pollHead      = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
	pollRetry     = "d\r\nretry: 3000\n\n\r\n" // a chunk of 13 bytes
	pollHeartbeat = "3\r\n:\n\n\r\n"
	pollBeatEvery = 15 * time.Second // esource.DefaultHeartbeat
)

type pollerServer struct {
	writeTimeout time.Duration
	epfd         int
	shards       []*pollShard

	ringMu sync.RWMutex // held to write the ring, read to copy events from it
	ring   [][]byte     // event seq is ring[seq%len(ring)]
	next   atomic.Uint64

	mu    sync.Mutex       // guards the fields below
	conns map[int32]*pconn // by descriptor, for epoll's events
	gen   int32            // tells a reused descriptor's events from its last owner's
	added uint64           // connections so far, to pick a shard

	done   chan struct{}
	wg     sync.WaitGroup // writers, the epoll watcher, the ticker
	drains sync.WaitGroup // goroutines of connections that could not keep up
}

// A pollShard is one writer's connections.
type pollShard struct {
	kick  chan struct{} // one pending wake-up
	beat  atomic.Bool   // a heartbeat tick is due
	mu    sync.Mutex
	added []*pconn // new connections, taken by the writer at its next pass
	conns []*pconn // the writer's alone
}

// A pconn is a taken over connection.
type pconn struct {
	conn net.Conn
	raw  syscall.RawConn
	fd   int32
	gen  int32

	mu   sync.Mutex
	busy bool // a drain goroutine has the connection, not the pool
	dead bool

	// Whoever has the connection (its writer, or its drain goroutine)
	// owns these; the hand-over goes through mu.
	cursor uint64 // seq of the next event to send
	quiet  bool   // nothing written since the last heartbeat tick
}

func newPollerServer(backlog int, writeTimeout time.Duration) (*pollerServer, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	s := &pollerServer{writeTimeout: writeTimeout, epfd: epfd, ring: make([][]byte, backlog),
		conns: make(map[int32]*pconn), done: make(chan struct{})}
	for range runtime.GOMAXPROCS(0) {
		sh := &pollShard{kick: make(chan struct{}, 1)}
		s.shards = append(s.shards, sh)
		s.wg.Add(1)
		go s.writer(sh)
	}
	s.wg.Add(2)
	go s.watch()
	go s.heartbeats()
	return s, nil
}

func (s *pollerServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.Method != http.MethodGet {
		http.Error(w, "poller: HTTP/1.1 GET only", http.StatusHTTPVersionNotSupported)
		return
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		conn.Close()
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		conn.Close()
		return
	}
	c := &pconn{conn: conn, raw: raw}
	if err := raw.Control(func(fd uintptr) { c.fd = int32(fd) }); err != nil {
		conn.Close()
		return
	}
	_ = conn.SetWriteDeadline(time.Now().Add(s.writeTimeout))
	if _, err := conn.Write([]byte(pollHead + pollRetry)); err != nil {
		conn.Close()
		return
	}
	_ = conn.SetWriteDeadline(time.Time{})

	s.mu.Lock()
	s.gen++
	c.gen, c.cursor = s.gen, s.next.Load()
	s.conns[c.fd] = c
	sh := s.shards[s.added%uint64(len(s.shards))]
	s.added++
	s.mu.Unlock()
	ev := syscall.EpollEvent{Events: syscall.EPOLLRDHUP, Fd: c.fd, Pad: c.gen}
	if err := syscall.EpollCtl(s.epfd, syscall.EPOLL_CTL_ADD, int(c.fd), &ev); err != nil {
		s.drop(c)
		return
	}
	sh.mu.Lock()
	sh.added = append(sh.added, c)
	sh.mu.Unlock()
	kick(sh)
}

func (s *pollerServer) publish(id string, data []byte) {
	b := make([]byte, 0, len("id: \ndata: \n\n")+len(id)+len(data))
	b = append(b, "id: "...)
	b = append(b, id...)
	b = append(b, "\ndata: "...)
	b = append(b, data...) // the bench's data has no newlines
	b = append(b, "\n\n"...)
	s.ringMu.Lock()
	n := s.next.Load()
	s.ring[n%uint64(len(s.ring))] = b
	s.next.Store(n + 1)
	s.ringMu.Unlock()
	for _, sh := range s.shards {
		kick(sh)
	}
}

func kick(sh *pollShard) {
	select {
	case sh.kick <- struct{}{}:
	default:
	}
}

// chunk returns events from up to to as one HTTP/1.1 chunk, or false if
// the ring no longer holds from.
func (s *pollerServer) chunk(from, to uint64) ([]byte, bool) {
	s.ringMu.RLock()
	defer s.ringMu.RUnlock()
	if s.next.Load()-from >= uint64(len(s.ring)) {
		return nil, false
	}
	n := 0
	for seq := from; seq < to; seq++ {
		n += len(s.ring[seq%uint64(len(s.ring))])
	}
	b := make([]byte, 0, 16+n+2)
	b = strconv.AppendInt(b, int64(n), 16)
	b = append(b, "\r\n"...)
	for seq := from; seq < to; seq++ {
		b = append(b, s.ring[seq%uint64(len(s.ring))]...)
	}
	return append(b, "\r\n"...), true
}

// writer is one writer of the pool: at each wake-up it writes to every
// connection of its shard that the pool has.
func (s *pollerServer) writer(sh *pollShard) {
	defer s.wg.Done()
	var cache struct {
		from, to uint64
		b        []byte
	}
	for {
		select {
		case <-sh.kick:
		case <-s.done:
			return
		}
		sh.mu.Lock()
		sh.conns = append(sh.conns, sh.added...)
		clear(sh.added)
		sh.added = sh.added[:0]
		sh.mu.Unlock()
		beat := sh.beat.Swap(false)
		live := sh.conns[:0]
		for _, c := range sh.conns {
			// Per connection, not per pass: a pass over thousands takes
			// long enough for events to be published meanwhile.
			next := s.next.Load()
			c.mu.Lock()
			dead, busy := c.dead, c.busy
			c.mu.Unlock()
			if dead {
				continue
			}
			live = append(live, c)
			if busy {
				continue
			}
			var b []byte
			switch {
			case c.cursor < next:
				if cache.b == nil || cache.from != c.cursor || cache.to != next {
					var ok bool
					if cache.b, ok = s.chunk(c.cursor, next); !ok {
						cache.b = nil
						s.drop(c) // a ring behind
						continue
					}
					cache.from, cache.to = c.cursor, next
				}
				b, c.quiet = cache.b, false
			case beat && c.quiet:
				b = []byte(pollHeartbeat)
			}
			if beat {
				c.quiet = true
			}
			if b == nil {
				continue
			}
			n, err := rawWrite(c.raw, b)
			if err != nil {
				s.drop(c)
				continue
			}
			c.cursor = next
			if n < len(b) {
				c.mu.Lock()
				c.busy = true
				c.mu.Unlock()
				s.drains.Add(1)
				go s.drain(c, b[n:])
			}
		}
		clear(sh.conns[len(live):])
		sh.conns = live
	}
}

// rawWrite writes what b's connection takes without waiting: a full
// socket buffer is n < len(b) and no error.
func rawWrite(raw syscall.RawConn, b []byte) (n int, err error) {
	cerr := raw.Write(func(fd uintptr) bool {
		n, err = syscall.Write(int(fd), b)
		return true // done, whatever happened: never wait
	})
	if err == syscall.EAGAIN {
		return 0, nil
	}
	if n < 0 {
		n = 0
	}
	if err == nil {
		err = cerr
	}
	return n, err
}

// drain is the goroutine of a connection that could not take its bytes
// b: it writes them and what follows, and hands the connection back to
// the pool once it has written all there is.
func (s *pollerServer) drain(c *pconn, b []byte) {
	defer s.drains.Done()
	for {
		_ = c.conn.SetWriteDeadline(time.Now().Add(s.writeTimeout))
		if _, err := c.conn.Write(b); err != nil {
			s.drop(c)
			return
		}
		_ = c.conn.SetWriteDeadline(time.Time{})
		c.mu.Lock()
		// Loaded under mu: a writer that skipped the connection as busy
		// saw a publish that this load sees too.
		next := s.next.Load()
		if c.cursor == next {
			c.busy = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		var ok bool
		if b, ok = s.chunk(c.cursor, next); !ok {
			s.drop(c)
			return
		}
		c.cursor, c.quiet = next, false
	}
}

// drop closes c, once.
func (s *pollerServer) drop(c *pconn) {
	c.mu.Lock()
	dead := c.dead
	c.dead = true
	c.mu.Unlock()
	if dead {
		return
	}
	s.mu.Lock()
	if s.conns[c.fd] == c {
		delete(s.conns, c.fd)
	}
	s.mu.Unlock()
	// Before Close, which frees the descriptor for another connection.
	_ = syscall.EpollCtl(s.epfd, syscall.EPOLL_CTL_DEL, int(c.fd), nil)
	c.conn.Close()
}

// watch drops the connections whose peers closed them.
func (s *pollerServer) watch() {
	defer s.wg.Done()
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(s.epfd, events, 500) // ms: look at done
		select {
		case <-s.done:
			return
		default:
		}
		if err != nil && err != syscall.EINTR {
			panic("poller: epoll_wait: " + err.Error()) // a bug of this file
		}
		for _, ev := range events[:max(n, 0)] {
			s.mu.Lock()
			c := s.conns[ev.Fd]
			s.mu.Unlock()
			if c != nil && c.gen == ev.Pad {
				s.drop(c)
			}
		}
	}
}

// heartbeats marks a heartbeat due in every shard, at each tick.
func (s *pollerServer) heartbeats() {
	defer s.wg.Done()
	t := time.NewTicker(pollBeatEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			for _, sh := range s.shards {
				sh.beat.Store(true)
				kick(sh)
			}
		case <-s.done:
			return
		}
	}
}

func (s *pollerServer) close() {
	close(s.done)
	s.wg.Wait()
	s.mu.Lock()
	var all []*pconn
	for _, c := range s.conns {
		all = append(all, c)
	}
	s.mu.Unlock()
	for _, c := range all {
		s.drop(c)
	}
	s.drains.Wait()
	_ = syscall.Close(s.epfd)
}
