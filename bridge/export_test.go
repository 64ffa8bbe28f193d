package bridge

import (
	"context"
	"encoding/base64"
	"iter"
	"time"

	"github.com/esbridge/esbridge/esource"
)

// SetCatchUp sets the ring size and the patience of the catch-up readers
// of the route at path, before any starts.
func SetCatchUp(b *Bridge, path string, events int, patience time.Duration) {
	cs := b.routes[path].catchUps
	cs.events, cs.patience = events, patience
}

// Tee returns an iterator over what a client of the route at path
// receives, resuming after lastID if it is not empty.
func Tee(ctx context.Context, b *Bridge, path, lastID string) (iter.Seq[esource.Event], error) {
	return b.routes[path].es.Tee(ctx, lastID)
}

// Clients returns the number of clients of the route at path.
func Clients(b *Bridge, path string) int { return b.routes[path].es.Clients() }

// Origin returns the ID of the start of the stream of the route at path.
func Origin(b *Bridge, path string) string { return b.routes[path].codec().origin() }

// StreamsIDPart returns the part of the route at path in id, a merged
// stream's event ID: the route's own event ID, "" if it has none.
func StreamsIDPart(id, path string) string {
	s := newStreamsID([][4]byte{pathTag(path)})
	if s.decode(id) != nil {
		return ""
	}
	return s.get(pathTag(path))
}

// WithPosition returns id, an event ID of a route with history, with its
// body replaced by the position pos: an ID as a client could craft it, of
// the right version, stream and incarnation.
func WithPosition(id string, pos Position) string {
	b, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil || len(b) < 7 {
		return ""
	}
	raw := append([]byte{b[0]&^0xf | kindPosition}, b[1:7]...)
	return base64.RawURLEncoding.EncodeToString(appendPosition(raw, pos))
}
