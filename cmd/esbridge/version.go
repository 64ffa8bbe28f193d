package main

import (
	"runtime/debug"
	"strconv"
)

// buildInfo describes the program's build, as the Go toolchain recorded it
// in the binary (runtime/debug.ReadBuildInfo): go install ...@v1.2.3
// records the module version, a build in a Git work tree the commit and
// whether the tree had changes.
type buildInfo struct {
	version   string // v1.2.3, a pseudo-version, or (devel)
	revision  string // the commit, if recorded
	modified  bool   // the work tree had changes not committed
	goVersion string
}

// readBuildInfo returns the build's description; its version is
// "(unknown)" in a binary built without module support.
func readBuildInfo() buildInfo {
	b := buildInfo{version: "(unknown)"}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	b.goVersion = info.GoVersion
	if info.Main.Version != "" {
		b.version = info.Main.Version
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.revision = s.Value
		case "vcs.modified":
			b.modified = s.Value == "true"
		}
	}
	return b
}

// String is the line -version prints: "esbridge VERSION", then
// "revision=COMMIT modified=true|false" if the build recorded its commit,
// and "go=GOVERSION".
func (b buildInfo) String() string {
	s := "esbridge " + b.version
	if b.revision != "" {
		s += " revision=" + b.revision + " modified=" + strconv.FormatBool(b.modified)
	}
	if b.goVersion != "" {
		s += " go=" + b.goVersion
	}
	return s
}

// logAttrs are the attributes of the build in the start-up log line.
func (b buildInfo) logAttrs() []any {
	attrs := []any{"version", b.version}
	if b.revision != "" {
		attrs = append(attrs, "revision", b.revision, "modified", b.modified)
	}
	return attrs
}
