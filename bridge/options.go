package bridge

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Options are a route's options, common to every source. In a route URL
// they are query parameters: start, type, format, catchup, max_since,
// snapshot, snapshot_max_keys and snapshot_max_bytes.
type Options struct {
	// Earliest makes a client without an event ID begin with the earliest
	// message the broker holds (start=earliest) rather than with the next
	// one to arrive (start=latest, the default). It needs a source with
	// history.
	Earliest bool

	// Type chooses the SSE event type: TypeNone (the default, so that
	// onmessage fires), TypeSubject (the NATS subject, Kafka topic or AMQP
	// routing key), or "header:NAME" (the value of header NAME, none when
	// the message lacks it).
	Type string

	// Format is FormatRaw (the default: the payload as the data) or
	// FormatEnvelope (a JSON object with the payload and its metadata).
	Format string

	// CatchUpReaders is how many broker readers may catch clients up at
	// once (catchup=N, 1 to 64); zero means DefaultCatchUpReaders. Each
	// serves every client it can, however many resume at once.
	CatchUpReaders int

	// MaxSince is how far back a client may ask to start with the since
	// query parameter (max_since=DURATION). Zero means no limit on a
	// route with Earliest, and no since at all on other routes; a
	// negative value refuses every since. A client past it gets a gap
	// event (reason "since-refused") and the live stream.
	MaxSince time.Duration

	// Snapshot turns on the route's snapshot view (?view=snapshot, see
	// snapshot.go) and names each message's key, in the words of Type:
	// SnapshotKey (the Kafka message key), TypeSubject (the NATS subject,
	// the AMQP routing key), or "header:NAME". Empty: no snapshot view. It
	// needs a source with history.
	Snapshot string

	// SnapshotMaxKeys and SnapshotMaxBytes bound the route's snapshot
	// table (snapshot_max_keys=N, snapshot_max_bytes=SIZE); zero means
	// DefaultSnapshotMaxKeys and DefaultSnapshotMaxBytes. A route whose
	// table grows past them drops it and refuses snapshots, and goes on
	// streaming.
	SnapshotMaxKeys  int
	SnapshotMaxBytes int64
}

// Option values.
const (
	TypeNone    = ""
	TypeSubject = "subject"

	FormatRaw      = "raw"
	FormatEnvelope = "envelope"

	SnapshotKey = "key"
)

// Defaults of the snapshot table's bounds.
const (
	DefaultSnapshotMaxKeys  = 1_000_000
	DefaultSnapshotMaxBytes = 256 << 20
)

// ErrBadOption is returned for a route option out of range.
var ErrBadOption = errors.New("bridge: bad route option")

// ParseOptions takes the common route options out of q and returns them
// with the remaining parameters, which belong to the source. It returns
// ErrBadOption, wrapped with the option, for a value out of range or an
// option given more than once.
func ParseOptions(q url.Values) (Options, url.Values, error) {
	rest := url.Values{}
	o := Options{Format: FormatRaw}
	for name, values := range q {
		v := values[len(values)-1]
		switch name {
		case "start":
			switch v {
			case "latest":
			case "earliest":
				o.Earliest = true
			default:
				return o, nil, fmt.Errorf("%w: start=%q: want latest or earliest", ErrBadOption, v)
			}
		case "type":
			if v != TypeNone && v != TypeSubject && (!strings.HasPrefix(v, "header:") || v == "header:") {
				return o, nil, fmt.Errorf("%w: type=%q: want subject or header:NAME", ErrBadOption, v)
			}
			o.Type = v
		case "format":
			if v != FormatRaw && v != FormatEnvelope {
				return o, nil, fmt.Errorf("%w: format=%q: want raw or envelope", ErrBadOption, v)
			}
			o.Format = v
		case "catchup":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 64 {
				return o, nil, fmt.Errorf("%w: catchup=%q: want 1 to 64", ErrBadOption, v)
			}
			o.CatchUpReaders = n
		case "max_since":
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return o, nil, fmt.Errorf("%w: max_since=%q: want a duration such as 24h, or 0 to refuse since", ErrBadOption, v)
			}
			o.MaxSince = d
			if d == 0 {
				o.MaxSince = -1
			}
		case "snapshot":
			if v != SnapshotKey && v != TypeSubject && (!strings.HasPrefix(v, "header:") || v == "header:") {
				return o, nil, fmt.Errorf("%w: snapshot=%q: want key, subject or header:NAME", ErrBadOption, v)
			}
			o.Snapshot = v
		case "snapshot_max_keys":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return o, nil, fmt.Errorf("%w: snapshot_max_keys=%q: want a number of keys, 1 or more", ErrBadOption, v)
			}
			o.SnapshotMaxKeys = n
		case "snapshot_max_bytes":
			n, err := ParseSize(v)
			if err != nil {
				return o, nil, fmt.Errorf("%w: snapshot_max_bytes=%q: want a positive size such as 256MiB", ErrBadOption, v)
			}
			o.SnapshotMaxBytes = n
		default:
			rest[name] = values
			continue
		}
		if len(values) != 1 {
			return o, nil, fmt.Errorf("%w: %s given %d times", ErrBadOption, name, len(values))
		}
	}
	return o, rest, nil
}

// ParseSize reads a size in bytes written as GOMEMLIMIT is: digits and
// an optional unit, B, KiB, MiB, GiB or TiB. It returns ErrBadOption for
// anything else, and for a size that is not positive.
func ParseSize(v string) (int64, error) {
	units := [...]struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}} // B last: MiB ends with it
	digits, shift := v, uint(0)
	for _, u := range units {
		if d, ok := strings.CutSuffix(v, u.suffix); ok {
			digits, shift = d, u.shift
			break
		}
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("%w: want a positive size such as 512MiB or 2GiB (B, KiB, MiB, GiB, TiB), not %q", ErrBadOption, v)
	}
	return n << shift, nil
}
