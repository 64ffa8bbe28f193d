//go:build !unix

package esource

import "syscall"

// closedByPeer cannot tell on this system: a client that goes away is
// noticed at the next write.
func closedByPeer(syscall.RawConn) bool { return false }
