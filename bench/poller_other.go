//go:build !linux

package main

import (
	"errors"
	"time"
)

// newPollerServer fails: lib "poller" (poller.go) watches its connections
// with epoll, which only Linux has.
func newPollerServer(int, time.Duration) (server, error) {
	return nil, errors.New(`lib "poller" runs on Linux only`)
}
