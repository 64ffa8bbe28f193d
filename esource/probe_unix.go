//go:build unix

package esource

import (
	"errors"
	"syscall"
)

// closedByPeer reports, without blocking, whether the peer of the
// connection of rc closed or reset it: it peeks at what the connection
// holds. Bytes waiting to be read, or nothing yet, mean it is open.
func closedByPeer(rc syscall.RawConn) bool {
	var closed bool
	var b [1]byte
	err := rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == nil:
			closed = n == 0 // the peer's FIN
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EINTR):
		default:
			closed = true // ECONNRESET and the like
		}
		return true // done: never wait for the connection to be readable
	})
	return closed || err != nil
}
