package main

import (
	"strconv"
	"strings"
	"testing"

	"github.com/esbridge/esbridge/esource"
)

// -backlog defaults to the real default, which -h shows, and refuses less
// than 1 with a message naming the flag.
func TestParseBacklog(t *testing.T) {
	t.Parallel()
	route := "/a=kafka://127.0.0.1:9092/t"
	c, err := parseFlags([]string{"-route", route}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.backlog != esource.DefaultBacklog {
		t.Errorf("default -backlog %d, want %d", c.backlog, esource.DefaultBacklog)
	}
	if want := "(default " + strconv.Itoa(esource.DefaultBacklog) + ")"; !strings.Contains(usage(), "events kept in memory per route "+want) {
		t.Errorf("the usage does not give -backlog's default %s:\n%s", want, usage())
	}
	for _, v := range []string{"0", "-1"} {
		_, err := parseFlags([]string{"-route", route, "-backlog", v}, nil)
		if err == nil || !strings.Contains(err.Error(), "-backlog") {
			t.Errorf("-backlog %s: error %v, want one naming -backlog", v, err)
		}
	}
	if c, err := parseFlags([]string{"-route", route, "-backlog", "1"}, nil); err != nil || c.backlog != 1 {
		t.Errorf("-backlog 1: %v", err)
	}
}
