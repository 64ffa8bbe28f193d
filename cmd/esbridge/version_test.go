package main

import (
	"bufio"
	"os/exec"
	"strings"
	"testing"
)

// -version prints, on stdout, one line with the module version, the
// commit built and whether the work tree had changes, as the Go toolchain
// recorded them in the binary (go version -m shows them), and exits 0.
// Built in a Git work tree, the commit is the work tree's HEAD.
func TestVersion(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	p := startProc(t, bin, "-version")
	if code := p.Wait(waitFor); code != 0 {
		t.Fatalf("-version: exit status %d, want 0", code)
	}
	out := p.Output()
	lines := scanLines(out)
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "esbridge ") {
		t.Fatalf("-version printed %q, want one line \"esbridge VERSION ...\"", out)
	}

	// What the toolchain recorded.
	m, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	var version, revision, modified string
	sc := bufio.NewScanner(strings.NewReader(string(m)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 3 && f[0] == "mod":
			version = f[2]
		case len(f) == 2 && f[0] == "build":
			if v, ok := strings.CutPrefix(f[1], "vcs.revision="); ok {
				revision = v
			}
			if v, ok := strings.CutPrefix(f[1], "vcs.modified="); ok {
				modified = v
			}
		}
	}
	if version == "" {
		t.Fatalf("go version -m shows no module version:\n%s", m)
	}
	// On stdout, for a script's $(esbridge -version).
	if stdout, err := exec.Command(bin, "-version").Output(); err != nil || string(stdout) != out {
		t.Errorf("-version wrote %q on stdout (%v), want %q", stdout, err, out)
	}
	fields := strings.Fields(lines[0])
	if fields[1] != version {
		t.Errorf("-version printed %q, want the version %s", lines[0], version)
	}
	if revision == "" {
		// go build records no commit with -buildvcs=false, outside a
		// repository, and in a linked Git worktree, whose .git is a file
		// (golang/go#58218).
		if strings.Contains(lines[0], "revision=") {
			t.Errorf("-version printed %q, with a revision the build did not record", lines[0])
		}
		t.Logf("the build recorded no commit (go version -m):\n%s", m)
		return
	}
	for _, want := range []string{"revision=" + revision, "modified=" + modified} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("-version printed %q, want %s", lines[0], want)
		}
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatalf("the build recorded a commit, but git rev-parse HEAD fails: %v", err)
	}
	if want := "revision=" + strings.TrimSpace(string(head)); !strings.Contains(lines[0], want) {
		t.Errorf("-version printed %q, want %s, the work tree's commit (a linked Git worktree inside another work tree is stamped with the other's commit: golang/go#58218)", lines[0], want)
	}
}
