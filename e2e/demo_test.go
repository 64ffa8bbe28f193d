package e2e

import (
	"bufio"
	"context"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esbridge/esbridge/internal/poll"
)

// The demo page of esbridge -demo resumes with nothing lost after its
// connection is dropped and reopened while messages keep coming; a
// screenshot of it then is docs/demo.png, rewritten when E2E_SCREENSHOT is
// set (E2E_SCREENSHOT=1 go test ./e2e -run Demo), else saved in a
// temporary directory.
func TestDemo(t *testing.T) {
	t.Parallel()
	br := launchBrowser(t)
	b := startBridge(t, "-demo")
	b.waitReady()
	pg := br.open("http://" + b.Addr + "/")
	text := func(id string) string {
		var s string
		pg.eval(&s, `document.getElementById("`+id+`").textContent`)
		return s
	}
	number := func(expr string) int {
		var n int
		pg.eval(&n, expr)
		return n
	}
	const shown = `Number(document.getElementById("count").textContent)`
	poll.Until(t, waitFor, "the demo page shows 5 events", func() bool { return number(shown) >= 5 })

	pg.eval(nil, `document.getElementById("toggle").click()`)
	if s := text("state"); s != "closed" {
		t.Fatalf("after a click on %q, the state is %q, want closed", text("toggle"), s)
	}
	// Messages keep coming while the page is away: wait for three.
	readDemoEvents(t, "http://"+b.Addr+"/demo", 3)
	pg.eval(nil, `document.getElementById("toggle").click()`)
	poll.Until(t, waitFor, "the demo page says it resumed", func() bool { return strings.HasPrefix(text("note"), "Resumed") })
	var class string
	pg.eval(&class, `document.getElementById("note").className`)
	if class != "ok" {
		t.Errorf("the demo page after the resume says %q, want that nothing was lost", text("note"))
	}
	// Rows are added at the top: those above the first after the resume,
	// and it, came since.
	const sinceResume = `[...document.querySelectorAll("#events tr")].findIndex((tr) => tr.classList.contains("resumed")) + 1`
	poll.Until(t, waitFor, "the demo page shows the messages sent while it was away, and one more", func() bool {
		return number(sinceResume) >= 4
	})
	if n := number(`document.querySelectorAll("#events tr.gap").length`); n > 0 {
		t.Errorf("the demo page shows %d gaps", n)
	}

	path := filepath.Join(t.TempDir(), "demo.png")
	if os.Getenv("E2E_SCREENSHOT") != "" {
		path = filepath.Join("..", "docs", "demo.png")
	}
	pg.screenshot(path)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if cfg, err := png.DecodeConfig(f); err != nil || cfg.Width != 1100 || cfg.Height != 800 {
		t.Errorf("screenshot %s: %dx%d (%v), want a PNG of 1100x800", path, cfg.Width, cfg.Height, err)
	}
	t.Logf("screenshot: %s", path)
}

// readDemoEvents reads n events of the stream at url, as a client that
// starts with the next message.
func readDemoEvents(t *testing.T, url string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for n > 0 && sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data:") {
			n--
		}
	}
	if n > 0 {
		t.Fatalf("GET %s: %d events missing: %v", url, n, sc.Err())
	}
}
