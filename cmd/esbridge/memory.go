package main

// The runtime's soft memory limit: -memory-limit, else GOMEMLIMIT, else
// a share of the container's memory, so that the garbage collector works
// harder as the process nears what the container allows rather than the
// kernel killing it.

import (
	"errors"
	"fmt"
	"io/fs"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/esbridge/esbridge/bridge"
)

// cgroupShare is the part of a cgroup's memory limit taken as the soft
// limit: the rest is for what the runtime does not count (stacks of
// threads, the kernel's buffers of sockets).
const cgroupShare = 0.9

// A byteSize is a number of bytes written as GOMEMLIMIT is: digits and an
// optional unit, B, KiB, MiB, GiB or TiB. Zero means unset.
type byteSize int64

func (b *byteSize) Set(s string) error {
	n, err := bridge.ParseSize(s)
	if err != nil {
		return errors.New("want a positive size such as 512MiB or 2GiB (B, KiB, MiB, GiB, TiB)")
	}
	*b = byteSize(n)
	return nil
}

func (b *byteSize) String() string {
	if b == nil || *b == 0 {
		return ""
	}
	return strconv.FormatInt(int64(*b), 10) + "B"
}

// A memoryLimit is the soft limit chosen and where it came from.
type memoryLimit struct {
	bytes  int64  // 0 for none
	source string // "-memory-limit", "GOMEMLIMIT" or the cgroup file
}

// chooseMemoryLimit returns the soft limit: flag if set; else none of
// its own if GOMEMLIMIT is set (the runtime took it at start); else
// cgroupShare of the memory limit of the cgroup under root (cgroup v2's
// memory.max, or v1's memory/memory.limit_in_bytes), if it has one.
func chooseMemoryLimit(flag byteSize, env environment, root fs.FS) memoryLimit {
	switch {
	case flag > 0:
		return memoryLimit{int64(flag), "-memory-limit"}
	case env["GOMEMLIMIT"] != "":
		return memoryLimit{debug.SetMemoryLimit(-1), "GOMEMLIMIT"}
	}
	for _, name := range []string{"memory.max", "memory/memory.limit_in_bytes"} {
		b, err := fs.ReadFile(root, name)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		// "max" (v2), or a v1 limit near 2^63: no limit.
		if err != nil || n <= 0 || n >= 1<<62 {
			return memoryLimit{}
		}
		return memoryLimit{int64(float64(n) * cgroupShare), "/sys/fs/cgroup/" + name}
	}
	return memoryLimit{}
}

// apply sets the runtime's soft limit, if l has one.
func (l memoryLimit) apply() {
	if l.bytes > 0 {
		debug.SetMemoryLimit(l.bytes)
	}
}

// logAttrs returns l for the start-up log line.
func (l memoryLimit) logAttrs() []any {
	if l.bytes == 0 {
		return []any{"memory_limit", "none"}
	}
	return []any{"memory_limit", fmt.Sprintf("%dMiB", l.bytes>>20), "memory_limit_from", l.source}
}
