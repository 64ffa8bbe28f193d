package main

// The environment: every flag has a variable, ESBRIDGE_ and the flag's
// name in upper case with "_" for "-", which sets it when the command line
// does not; and ${NAME} in a route URL or a file flag is replaced by the
// variable NAME, so that secrets stay off the command line.

import (
	"flag"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
)

// envPrefix begins the name of every variable that sets a flag. A variable
// with it that names no flag stops the program: a misspelt one must not
// leave its flag at the default.
const envPrefix = "ESBRIDGE_"

// envName returns the variable of the flag name: -max-clients-per-ip is
// ESBRIDGE_MAX_CLIENTS_PER_IP.
func envName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// An environment is the process's environment variables by name.
type environment map[string]string

// newEnvironment returns the environment of environ, a list of
// "NAME=value" as os.Environ returns it. Where a name comes twice the
// first counts, as for os.Getenv.
func newEnvironment(environ []string) environment {
	env := make(environment, len(environ))
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if _, seen := env[name]; ok && !seen {
			env[name] = value
		}
	}
	return env
}

// A repeatableFlag is the value of a flag that may be given several
// times, each adding a value. Its variable holds the values separated by
// white space.
type repeatableFlag interface {
	flag.Value
	repeatable() bool
}

func (*routeFlags) repeatable() bool  { return true }
func (*listFlag) repeatable() bool    { return true }
func (*prefixFlags) repeatable() bool { return true }

// isRepeatable reports whether the flag f may be given several times.
func isRepeatable(f *flag.Flag) bool {
	r, ok := f.Value.(repeatableFlag)
	return ok && r.repeatable()
}

// envFlags maps each flag set from the environment to its variable.
type envFlags map[string]string

// setFromEnv sets each flag of fs that the command line did not set from
// its variable in env, if the variable is set and not empty (an empty
// variable counts as unset, as templates render optional values). It
// returns the flags so set, and the variables ignored because their flag
// was given on the command line. A variable with envPrefix that names no
// flag is an error that names it.
func setFromEnv(fs *flag.FlagSet, env environment) (set envFlags, ignored []string, err error) {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	byVar := map[string]*flag.Flag{}
	fs.VisitAll(func(f *flag.Flag) { byVar[envName(f.Name)] = f })

	set = envFlags{}
	for _, name := range slices.Sorted(maps.Keys(env)) {
		if !strings.HasPrefix(name, envPrefix) {
			continue
		}
		f, ok := byVar[name]
		switch {
		case !ok:
			return nil, nil, fmt.Errorf("the environment variable %s names no flag (see esbridge -h for each flag's variable)", name)
		case env[name] == "":
			continue
		case given[f.Name]:
			ignored = append(ignored, name)
			continue
		}
		values := []string{env[name]}
		if isRepeatable(f) {
			values = strings.Fields(env[name])
		}
		for _, v := range values {
			if err := fs.Set(f.Name, v); err != nil {
				shown := fmt.Sprintf("%.80q", v)
				if f.Name == "route" {
					shown = fmt.Sprintf("%q", redact(v))
				}
				return nil, nil, fmt.Errorf("invalid value %s for %s (flag -%s): %w", shown, name, f.Name, err)
			}
		}
		set[f.Name] = name
	}
	return set, ignored, nil
}

// flagNameRE finds the flags an error message names: -NAME, not within a
// word.
var flagNameRE = regexp.MustCompile(`(?:^|[^\w-])-([a-z][a-z0-9-]*)`)

// explain adds to err the variable of each flag its message names that was
// set from the environment, so that the line about a bad value says where
// the value came from. The checks of the flags name the flags alone; this
// is the one place that adds their variables.
func (s envFlags) explain(err error) error {
	if err == nil || len(s) == 0 {
		return err
	}
	var from []string
	for _, m := range flagNameRE.FindAllStringSubmatch(err.Error(), -1) {
		name := m[1]
		if v, ok := s[name]; ok && !slices.Contains(from, "-"+name+" is set by "+v) {
			from = append(from, "-"+name+" is set by "+v)
		}
	}
	if len(from) == 0 {
		return err
	}
	return fmt.Errorf("%w (%s)", err, strings.Join(from, ", "))
}

// maxExpanded bounds a value once its ${NAME} are replaced, and maxName
// the NAME of one.
const (
	maxExpanded = 64 << 10
	maxName     = 255
)

// A reference is a ${NAME} in a value, at value[start:end].
type reference struct {
	start, end int
	name       string
}

// references returns the ${NAME} of s, NAME being a letter or '_' and
// then letters, digits and '_'. A "${" that begins no ${NAME} is an error,
// so that a misspelt reference is never taken for text (a URL writes a
// literal "${" as "%24{").
func references(s string) ([]reference, error) {
	var refs []reference
	for i := 0; ; {
		j := strings.Index(s[i:], "${")
		if j < 0 {
			return refs, nil
		}
		start := i + j
		n := 0
		for p := start + 2; p < len(s); p++ {
			c := s[p]
			if c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || n > 0 && c >= '0' && c <= '9' {
				n++
				continue
			}
			break
		}
		end := start + 2 + n
		if n == 0 || n > maxName || end >= len(s) || s[end] != '}' {
			return nil, fmt.Errorf("the ${ at byte %d begins no ${NAME} (NAME: letters, digits and _; a URL writes a literal ${ as %%24{)", start)
		}
		refs = append(refs, reference{start, end + 1, s[start+2 : end]})
		i = end + 1
	}
}

// value returns the value of the variable name, which must be set and
// not empty: an empty password or file name is always a mistake. Its
// errors name the variable and never show a value.
func (env environment) value(name string) (string, error) {
	v, ok := env[name]
	switch {
	case !ok:
		return "", fmt.Errorf("${%s}: the environment variable %s is not set", name, name)
	case v == "":
		return "", fmt.Errorf("${%s}: the environment variable %s is empty", name, name)
	}
	return v, nil
}

// expand returns s with each reference replaced by insert(i, value), i
// being the reference's index, bounded by maxExpanded.
func (env environment) expand(s string, refs []reference, insert func(i int, name, value string) (string, error)) (string, error) {
	var b strings.Builder
	last := 0
	for i, r := range refs {
		v, err := env.value(r.name)
		if err != nil {
			return "", err
		}
		if v, err = insert(i, r.name, v); err != nil {
			return "", err
		}
		b.WriteString(s[last:r.start])
		b.WriteString(v)
		last = r.end
		if b.Len() > maxExpanded {
			return "", fmt.Errorf("${%s}: the value is longer than %d KiB with it", r.name, maxExpanded>>10)
		}
	}
	b.WriteString(s[last:])
	if b.Len() > maxExpanded {
		return "", fmt.Errorf("the value is longer than %d KiB", maxExpanded>>10)
	}
	return b.String(), nil
}

// expandFile returns the file path s with each ${NAME} replaced by the
// value of NAME, as it is.
func (env environment) expandFile(s string) (string, error) {
	refs, err := references(s)
	if err != nil || len(refs) == 0 {
		return s, err
	}
	return env.expand(s, refs, func(_ int, _, v string) (string, error) { return v, nil })
}

// expandURL returns raw, a route URL, with each ${NAME} replaced by the
// value of NAME. Where the reference stands decides how:
//   - in the user name, the password, the path or the query, the value is
//     percent-encoded, so that every character of a password or a token
//     (a base64 one has '/' and '+') is taken as it is;
//   - in the host, or where the scheme is (the whole URL, or its first
//     part, from a variable), it is inserted as it is, to be parsed as a
//     part of the URL; in the host it must not end the host ('/', '?',
//     '#', '@').
func (env environment) expandURL(raw string) (string, error) {
	refs, err := references(raw)
	if err != nil || len(refs) == 0 {
		return raw, err
	}
	// The parts of the URL are found in raw with each reference taken for
	// one letter, as its value is not yet there.
	var shape strings.Builder
	at := make([]int, len(refs))
	last := 0
	for i, r := range refs {
		shape.WriteString(raw[last:r.start])
		at[i] = shape.Len()
		shape.WriteByte('x')
		last = r.end
	}
	shape.WriteString(raw[last:])
	s := shape.String()
	schemeEnd, hostStart, hostEnd := strings.Index(s, "://"), -1, -1
	if schemeEnd >= 0 {
		hostStart, hostEnd = schemeEnd+3, len(s)
		if i := strings.IndexAny(s[hostStart:], "/?#"); i >= 0 {
			hostEnd = hostStart + i
		}
		if i := strings.LastIndexByte(s[hostStart:hostEnd], '@'); i >= 0 {
			hostStart += i + 1
		}
	}
	return env.expand(raw, refs, func(i int, name, v string) (string, error) {
		switch p := at[i]; {
		case schemeEnd < 0 || p < schemeEnd:
			return v, nil
		case p >= hostStart && p < hostEnd:
			if strings.ContainsAny(v, "/?#@") {
				return "", fmt.Errorf("${%s} is in the host, and its value has a '/', '?', '#' or '@'", name)
			}
			return v, nil
		default:
			return escapeAll(v), nil
		}
	})
}

// escapeAll percent-encodes every byte of s but the unreserved characters
// of RFC 3986: what it returns means s in a URL's user information, path
// and query alike.
func escapeAll(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// expanding is the value of a file flag (its argument is named FILE):
// ${NAME} in what it is given is replaced before the flag takes it, from
// the command line and from a variable alike.
type expanding struct {
	flag.Value
	env environment
}

func (e expanding) Set(v string) error {
	x, err := e.env.expandFile(v)
	if err != nil {
		return err
	}
	return e.Value.Set(x)
}

func (e expanding) repeatable() bool {
	r, ok := e.Value.(repeatableFlag)
	return ok && r.repeatable()
}

// isFileFlag reports whether f's value is a file's path: its argument is
// named FILE in its usage.
func isFileFlag(f *flag.Flag) bool {
	arg, _ := flag.UnquoteUsage(f)
	return arg == "FILE"
}

// expandFileFlags makes every file flag of fs replace the ${NAME} of its
// values from env.
func expandFileFlags(fs *flag.FlagSet, env environment) {
	fs.VisitAll(func(f *flag.Flag) {
		if isFileFlag(f) {
			f.Value = expanding{f.Value, env}
		}
	})
}
