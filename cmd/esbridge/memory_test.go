package main

import (
	"fmt"
	"runtime/debug"
	"testing"
	"testing/fstest"
)

func TestByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"1", 1}, {"512B", 512}, {"2KiB", 2 << 10}, {"512MiB", 512 << 20}, {"2GiB", 2 << 30}, {"1TiB", 1 << 40},
		{"", 0}, {"0", 0}, {"-1MiB", 0}, {"1.5GiB", 0}, {"1GB", 0}, {"MiB", 0}, {"9999999TiB", 0}, {"1 MiB", 0},
	} {
		var b byteSize
		err := b.Set(tc.in)
		if tc.want == 0 && err == nil || tc.want != 0 && (err != nil || int64(b) != tc.want) {
			t.Errorf("Set(%q) = %d, %v; want %d", tc.in, b, err, tc.want)
		}
	}
}

func TestChooseMemoryLimit(t *testing.T) {
	v2 := fstest.MapFS{"memory.max": {Data: []byte("1073741824\n")}}
	v1 := fstest.MapFS{"memory/memory.limit_in_bytes": {Data: []byte("2147483648\n")}}
	for _, tc := range []struct {
		name   string
		flag   byteSize
		env    environment
		root   fstest.MapFS
		bytes  int64
		source string
	}{
		{"flag wins", 256 << 20, environment{"GOMEMLIMIT": "1GiB"}, v2, 256 << 20, "-memory-limit"},
		{"cgroup v2", 0, nil, v2, 1073741824 * 9 / 10, "/sys/fs/cgroup/memory.max"},
		{"cgroup v1", 0, nil, v1, 2147483648 * 9 / 10, "/sys/fs/cgroup/memory/memory.limit_in_bytes"},
		{"v2 without a limit", 0, nil, fstest.MapFS{"memory.max": {Data: []byte("max\n")}}, 0, ""},
		{"v1 without a limit", 0, nil, fstest.MapFS{"memory/memory.limit_in_bytes": {Data: []byte("9223372036854771712\n")}}, 0, ""},
		{"no cgroup", 0, nil, fstest.MapFS{}, 0, ""},
	} {
		got := chooseMemoryLimit(tc.flag, tc.env, tc.root)
		if got.bytes != tc.bytes || got.source != tc.source {
			t.Errorf("%s: %+v, want %d from %q", tc.name, got, tc.bytes, tc.source)
		}
	}
	// GOMEMLIMIT set: the runtime's limit as it took it.
	got := chooseMemoryLimit(0, environment{"GOMEMLIMIT": "1GiB"}, v2)
	if got.source != "GOMEMLIMIT" || got.bytes != debug.SetMemoryLimit(-1) {
		t.Errorf("with GOMEMLIMIT: %+v, want the runtime's limit from GOMEMLIMIT", got)
	}
}

// The soft memory limit the running program has, as its metrics tell:
// from ESBRIDGE_MEMORY_LIMIT (the flag's variable), and from GOMEMLIMIT
// when the flag is not given, which the start-up log names.
func TestMemoryLimit(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	_, stream := ns.jetStream("MEMLIMIT")
	for _, tc := range []struct {
		env   string
		bytes float64
		from  string
	}{
		{"ESBRIDGE_MEMORY_LIMIT=300MiB", 300 << 20, "memory_limit_from=-memory-limit"},
		{"GOMEMLIMIT=200MiB", 200 << 20, "memory_limit_from=GOMEMLIMIT"},
	} {
		b := startBridgeEnv(t, []string{tc.env}, "-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0", "-route", "/m="+stream)
		b.WaitReadyz(200)
		b.waitMetric("go_gc_gomemlimit_bytes", fmt.Sprintf("%v bytes, from %s", tc.bytes, tc.env), equals(tc.bytes))
		b.WaitLog(tc.from, 1)
	}
}
