package bridge

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/esbridge/esbridge/esource"
)

// Bounds of a client's filter: values of each parameter, and bytes of each
// value.
const (
	maxFilterValues   = 16
	maxFilterValueLen = 256
)

// ErrBadFilter is wrapped by the reason a client's filter is refused: the
// client is answered 400 with the reason.
var ErrBadFilter = errors.New("bridge: bad filter")

// A filter is what a client asks for with ?subject=, ?key= and ?type=: the
// events matching every parameter it gives, any of a parameter's values.
// It implements esource.Filter.
type filter struct {
	key     string   // canonical: equal for equal filters
	subject []string // the pattern's tokens; nil for any subject
	keys    []string // sorted; nil for any key
	types   []string // sorted; nil for any type
}

// Key implements esource.Filter.
func (f *filter) Key() string { return f.key }

// Match implements esource.Filter.
func (f *filter) Match(typ string, labels []string) bool {
	if f.types != nil {
		if typ == "" {
			typ = "message"
		}
		if _, ok := slices.BinarySearch(f.types, typ); !ok {
			return false
		}
	}
	if f.keys != nil {
		if len(labels) <= labelKey {
			return false
		}
		if _, ok := slices.BinarySearch(f.keys, labels[labelKey]); !ok {
			return false
		}
	}
	if f.subject != nil && (len(labels) <= labelSubject || !subjectMatches(f.subject, labels[labelSubject])) {
		return false
	}
	return true
}

// parseFilter returns the filter a client asks for in q, nil for none, or
// an error wrapping ErrBadFilter that says, with at most a short prefix of
// the client's input, why the route cannot serve it. Other parameters are
// not its business.
//
// A subject must lie within the route's subject (info.Subject), and be
// able to match one of the stream's subjects, if streamSubjects (see
// [Subjected]) says which: a subject that no message of the route can
// have would be a stream of nothing for ever.
func parseFilter(q url.Values, info Info, streamSubjects []string) (esource.Filter, error) {
	subjects, keys, types := q["subject"], q["key"], q["type"]
	if subjects == nil && keys == nil && types == nil {
		return nil, nil
	}
	f := &filter{}
	for name, vs := range map[string][]string{"subject": subjects, "key": keys, "type": types} {
		if len(vs) > maxFilterValues {
			return nil, fmt.Errorf("%w: more than %d %s parameters", ErrBadFilter, maxFilterValues, name)
		}
		for _, v := range vs {
			switch {
			case len(v) > maxFilterValueLen:
				return nil, fmt.Errorf("%w: %s=%s is longer than %d bytes", ErrBadFilter, name, short(v), maxFilterValueLen)
			case !utf8.ValidString(v):
				return nil, fmt.Errorf("%w: %s is not UTF-8", ErrBadFilter, name)
			}
		}
	}
	switch {
	case len(subjects) > 1:
		return nil, fmt.Errorf("%w: one subject parameter at most", ErrBadFilter)
	case len(subjects) == 1 && info.Subject == "":
		return nil, fmt.Errorf("%w: subject: this route's messages have no NATS subjects", ErrBadFilter)
	case len(subjects) == 1:
		pattern, err := subjectTokens(subjects[0])
		if err != nil {
			return nil, fmt.Errorf("%w: subject=%s: %w", ErrBadFilter, short(subjects[0]), err)
		}
		route, err := subjectTokens(info.Subject)
		if err != nil || !subjectWithin(pattern, route) {
			return nil, fmt.Errorf("%w: subject=%s is not within the route's subject %s", ErrBadFilter, short(subjects[0]), info.Subject)
		}
		if !overlapsAny(pattern, streamSubjects) {
			return nil, fmt.Errorf("%w: subject=%s matches no subject of the stream (%s)", ErrBadFilter, short(subjects[0]), listSubjects(streamSubjects))
		}
		f.subject = pattern
	}
	if keys != nil && !info.Keyed {
		return nil, fmt.Errorf("%w: key: this route's messages have no keys", ErrBadFilter)
	}
	for _, t := range types {
		if t == "" || strings.ContainsAny(t, "\r\n") {
			return nil, fmt.Errorf("%w: type=%s: want an event type", ErrBadFilter, short(t))
		}
	}
	f.keys, f.types = sortedSet(keys), sortedSet(types)

	var b strings.Builder
	b.WriteString(strings.Join(f.subject, "."))
	for _, set := range [][]string{f.keys, f.types} {
		b.WriteByte(0)
		if set != nil {
			b.WriteString(strconv.Itoa(len(set)))
		}
		for _, v := range set {
			b.WriteByte(0)
			b.WriteString(strconv.Itoa(len(v)))
			b.WriteByte(':')
			b.WriteString(v)
		}
	}
	f.key = b.String()
	return f, nil
}

// sortedSet returns vs sorted without repeats, nil for none.
func sortedSet(vs []string) []string {
	if vs == nil {
		return nil
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	return slices.Compact(s)
}

// short returns v quoted, cut to a short prefix: a client's input is
// never echoed whole.
func short(v string) string {
	const n = 48
	if len(v) > n {
		i := n
		for i > 0 && !utf8.RuneStart(v[i]) {
			i--
		}
		return strconv.Quote(v[:i]) + "…"
	}
	return strconv.Quote(v)
}

// subjectTokens splits a NATS subject, wildcards allowed, into its
// tokens, or says why it is not one.
func subjectTokens(s string) ([]string, error) {
	if s == "" {
		return nil, errors.New("empty subject")
	}
	tokens := strings.Split(s, ".")
	for i, t := range tokens {
		switch {
		case t == "":
			return nil, errors.New("empty token")
		case strings.ContainsAny(t, " \t\r\n"):
			return nil, errors.New("white space")
		case t == ">" && i < len(tokens)-1:
			return nil, errors.New("> must be the last token")
		case t != "*" && t != ">" && strings.ContainsAny(t, "*>"):
			return nil, errors.New("a wildcard must be a whole token")
		}
	}
	return tokens, nil
}

// subjectWithin reports whether every subject that pattern matches is
// matched by route: pattern is a narrowing of route.
func subjectWithin(pattern, route []string) bool {
	for i, r := range route {
		switch {
		case r == ">":
			return i < len(pattern)
		case i >= len(pattern):
			return false
		case pattern[i] == ">":
			return false
		case r == "*":
		case pattern[i] != r:
			return false
		}
	}
	return len(pattern) == len(route)
}

// overlapsAny reports whether some subject could match both pattern and
// one of subjects; true if subjects is empty (unknown), or if one of them
// cannot be read, so that a subject is refused only where it surely
// matches no message.
func overlapsAny(pattern []string, subjects []string) bool {
	if len(subjects) == 0 {
		return true
	}
	for _, s := range subjects {
		tokens, err := subjectTokens(s)
		if err != nil || subjectsOverlap(pattern, tokens) {
			return true
		}
	}
	return false
}

// subjectsOverlap reports whether some subject matches both patterns a
// and b: token by token, each pair is equal or has a wildcard, until
// either has >, which matches one token or more, or both end together.
func subjectsOverlap(a, b []string) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		switch {
		case a[i] == ">" || b[i] == ">":
			return true
		case a[i] != "*" && b[i] != "*" && a[i] != b[i]:
			return false
		}
	}
	return len(a) == len(b)
}

// listSubjects returns the first few of the stream's subjects, for a
// refusal.
func listSubjects(subjects []string) string {
	const n = 4
	if len(subjects) <= n {
		return strings.Join(subjects, ", ")
	}
	return strings.Join(subjects[:n], ", ") + fmt.Sprintf(" and %d more", len(subjects)-n)
}

// subjectMatches reports whether subject matches the pattern's tokens.
func subjectMatches(pattern []string, subject string) bool {
	for i, p := range pattern {
		if p == ">" {
			return subject != ""
		}
		tok, rest, more := strings.Cut(subject, ".")
		switch {
		case tok == "" || p != "*" && p != tok:
			return false
		case i == len(pattern)-1:
			return !more
		case !more:
			return false
		}
		subject = rest
	}
	return false
}
