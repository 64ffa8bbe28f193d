package main

import (
	"bytes"
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/esbridge/esbridge/bridge"
	amqpsource "github.com/esbridge/esbridge/source/amqp"
	kafkasource "github.com/esbridge/esbridge/source/kafka"
	natssource "github.com/esbridge/esbridge/source/nats"
)

// configDoc is the reference of the flags and route options.
var configDoc = filepath.Join("..", "..", "docs", "configuration.md")

// Every flag the program defines is in the -h text and in the flags table
// of docs/configuration.md, each with its environment variable beside it,
// and that table names no flag the program lacks.
func TestDocsFlags(t *testing.T) {
	var c config
	var defined []string
	newFlagSet(&c, nil).VisitAll(func(f *flag.Flag) { defined = append(defined, "-"+f.Name) })
	if len(defined) == 0 {
		t.Fatal("newFlagSet defines no flag")
	}

	var help, stdout bytes.Buffer
	if code := run([]string{"-h"}, nil, &stdout, &help); code != 0 {
		t.Fatalf("-h: exit status %d, want 0", code)
	}
	for _, name := range defined {
		// The flag's line: "  -name ARG   ESBRIDGE_NAME".
		line := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(name) + `( .*)?$`).FindString(help.String())
		switch want := envName(name[1:]); {
		case line == "":
			t.Errorf("flag %s is missing from the -h text (usageFormat in main.go)", name)
		case !strings.HasSuffix(line, " "+want):
			t.Errorf("the -h line of flag %s does not end with its variable %s: %q", name, want, line)
		}
	}

	documented := docTableNames(t, "Flags")
	sameNames(t, "flag", "the flags table", defined, documented)
	vars := docTableColumn(t, "Flags", 2)
	if len(vars) != len(documented) {
		t.Fatalf("the flags table of %s has %d flags and %d variables: each row wants both", configDoc, len(documented), len(vars))
	}
	for i, name := range documented {
		if want := envName(name[1:]); vars[i] != want {
			t.Errorf("the flags table of %s gives %s the variable %s, want %s", configDoc, name, vars[i], want)
		}
	}
}

// sameNames fails t for each name of a kind (flag, route option) that the
// code has and the docs' table lacks, and for each the table names that the
// code does not have.
func sameNames(t *testing.T, kind, table string, code, documented []string) {
	t.Helper()
	for _, name := range code {
		if !slices.Contains(documented, name) {
			t.Errorf("%s %s is missing from %s of %s", kind, name, table, configDoc)
		}
	}
	for _, name := range documented {
		if !slices.Contains(code, name) {
			t.Errorf("%s of %s lists the %s %s, which the code does not have", table, configDoc, kind, name)
		}
	}
}

// Every route URL option the parsers accept is in the route options tables
// of docs/configuration.md, and those tables name no option the parsers
// refuse.
func TestDocsRouteOptions(t *testing.T) {
	known := routeOptionsFromCode(t)
	t.Logf("route options in the code: %v", known)
	sameNames(t, "route option", "the route options tables", known, docTableNames(t, "Route options"))
}

// routeOptionsFromCode returns the route URL query options that the code
// accepts. They are spread over several parsers, none of which keeps a
// list: bridge.ParseOptions (the options of every route) and the ParseURL
// of each source switch on the query parameter's name. So the names are
// read from those switches in the source files, and each is then checked
// against the parser itself. The option auth is the program's own
// (takeAuthOption tests for it by name): it alone is hard-coded here, and
// checked through parseRoute.
func routeOptionsFromCode(t *testing.T) []string {
	t.Helper()
	parsers := []struct {
		file, fn string
		// accepts reports whether the parser takes the option name as
		// one of its own (a bad value may still be refused).
		accepts func(name string) bool
	}{
		{"bridge/options.go", "ParseOptions", func(name string) bool {
			_, rest, err := bridge.ParseOptions(url.Values{name: {"x"}})
			return err != nil || !rest.Has(name)
		}},
		{"source/nats/config.go", "ParseURL", func(name string) bool {
			return sourceAccepts(t, natssource.ParseURL, "jetstream://127.0.0.1:4222/S", name)
		}},
		{"source/kafka/config.go", "ParseURL", func(name string) bool {
			return sourceAccepts(t, kafkasource.ParseURL, "kafka://127.0.0.1:9092/t", name)
		}},
		{"source/amqp/config.go", "ParseURL", func(name string) bool {
			return sourceAccepts(t, amqpsource.ParseURL, "amqp://127.0.0.1:5672/?stream=s", name)
		}},
	}
	var all []string
	for _, p := range parsers {
		names := switchCases(t, filepath.Join("..", "..", filepath.FromSlash(p.file)), p.fn)
		if len(names) == 0 {
			t.Fatalf("found no option in %s's %s: has the parser changed shape? Update routeOptionsFromCode", p.file, p.fn)
		}
		if p.accepts("no_such_option") {
			t.Fatalf("%s's %s takes an unknown option: the test cannot tell its options", p.file, p.fn)
		}
		for _, name := range names {
			if !p.accepts(name) {
				t.Fatalf("%s's %s has a case %q but refuses it as an option: the test misreads the parser", p.file, p.fn, name)
			}
			if !slices.Contains(all, name) {
				all = append(all, name)
			}
		}
	}

	const auth = "auth" // hard-coded: see above
	f, err := parseRoute("/a=nats://127.0.0.1:4222/x?" + auth + "=none")
	if err != nil || !f.public || f.url.Query().Has(auth) {
		t.Fatalf("the route option %s=none is not taken by parseRoute (%v): update routeOptionsFromCode", auth, err)
	}
	return append(all, auth)
}

// sourceAccepts reports whether the parse function of a source takes the
// option name, added to the query of base.
func sourceAccepts[C any](t *testing.T, parse func(*url.URL) (C, error), base, name string) bool {
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Add(name, "x")
	u.RawQuery = q.Encode()
	_, err = parse(u)
	return err == nil || !strings.Contains(err.Error(), "unknown URL query parameter")
}

// switchCases returns the string cases of the switches, in the function fn
// of file, on a variable of an enclosing range loop: the query parameter
// names a parser handles.
func switchCases(t *testing.T, file, fn string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name != fn || fd.Recv != nil {
			continue
		}
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			r, ok := n.(*ast.RangeStmt)
			if !ok {
				return true
			}
			// The loop variable that holds the name: the key of a range
			// over the query, or the value of a range over its sorted
			// keys.
			var vars []string
			for _, e := range []ast.Expr{r.Key, r.Value} {
				if id, ok := e.(*ast.Ident); ok && id.Name != "_" {
					vars = append(vars, id.Name)
				}
			}
			ast.Inspect(r.Body, func(n ast.Node) bool {
				s, ok := n.(*ast.SwitchStmt)
				if !ok {
					return true
				}
				if tag, ok := s.Tag.(*ast.Ident); !ok || !slices.Contains(vars, tag.Name) {
					return true
				}
				for _, stmt := range s.Body.List {
					for _, e := range stmt.(*ast.CaseClause).List {
						if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
							v, err := strconv.Unquote(lit.Value)
							if err != nil {
								t.Fatal(err)
							}
							names = append(names, v)
						}
					}
				}
				return true
			})
			return true
		})
	}
	return names
}

// docTableNames returns the names in the first column of the tables of the
// section "## heading" of configDoc: the first word of each backquoted
// span, such as -route of `-route PATH=URL`.
func docTableNames(t *testing.T, heading string) []string {
	t.Helper()
	return docTableColumn(t, heading, 1)
}

// docTableColumn returns the names in the column col (1 for the first) of
// the tables of the section "## heading" of configDoc, as docTableNames
// does for the first.
func docTableColumn(t *testing.T, heading string, col int) []string {
	t.Helper()
	b, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	in, found := false, false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "## ") {
			in = strings.TrimSpace(strings.TrimPrefix(line, "## ")) == heading
			found = found || in
			continue
		}
		if !in || !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < col+1 {
			continue
		}
		for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(cells[col], -1) {
			names = append(names, strings.Fields(m[1])[0])
		}
	}
	if !found {
		t.Fatalf("%s has no section %q", configDoc, "## "+heading)
	}
	if len(names) == 0 {
		t.Fatalf("the section %q of %s has no table of backquoted names", heading, configDoc)
	}
	return names
}
