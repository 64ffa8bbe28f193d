// Package amqp is the RabbitMQ source of the bridge: a [Source] reads a
// stream queue (with history), or an exchange or a queue (live only),
// over AMQP 0-9-1 with github.com/rabbitmq/amqp091-go, and implements
// [bridge.Source] and [bridge.Connectivity].
//
// # URL forms
//
// [ParseURL] turns a route's broker URL into a [Config]:
//
//	amqp://USER:PASS@HOST:PORT/VHOST?stream=NAME
//	amqp://USER:PASS@HOST:PORT/VHOST?exchange=NAME[&key=BINDING_KEY]
//	amqp://USER:PASS@HOST:PORT/VHOST?queue=NAME
//
// amqps:// is the same over TLS, verifying the broker against the system
// roots. The user, password, port and vhost default as in AMQP (guest,
// guest, 5672 or 5671, /); a vhost with a slash is percent-encoded
// (%2F). The option prefetch=N (default [DefaultPrefetch]) sets how many
// unacknowledged messages the broker sends each reader ahead. Any other
// query parameter is an error.
//
// stream=NAME reads the stream queue NAME by offset, with the prefetch
// and acknowledgements that stream consumers need. Message.Offset is the
// stream offset and a Position the offset after the last message read.
// Offsets grow but are not contiguous: RabbitMQ gives some to entries of
// its own. An offset already deleted by retention makes the reader's
// Next return a [*bridge.ExpiredError] that names the offsets lost and
// resumes at the first offset the stream holds. Open at an offset past
// the one after the stream's last message, which RabbitMQ would wait at
// for good, returns an error wrapping [bridge.ErrAhead]: Open reads the
// stream's last chunk to know. A stream deleted under a reader (the broker
// cancels its consumer, and a passive declare finds no stream) makes Next
// return an error wrapping [bridge.ErrReset]. RabbitMQ tells no
// incarnation of a stream over AMQP 0-9-1: a stream declared again is
// told from the old one only by a position past its end.
//
// exchange=NAME declares, for each reader, a server-named, exclusive,
// auto-delete queue bound to the exchange NAME with BINDING_KEY (default
// "#", every message of a topic exchange; fanout exchanges ignore it), so
// that every reader, in every bridge instance, receives every message.
// There is no history: event IDs carry an instance epoch and a sequence.
//
// queue=NAME consumes the existing queue NAME. The broker shares a queue's
// messages among its consumers: several bridge instances on one queue
// each receive a part of them. Messages are acknowledged once handed to
// the bridge, in batches of half the prefetch count, so that after a
// reconnect the broker may send a few of them again.
//
// # Connections and reconnects
//
// amqp091-go does not reconnect by itself. A Source keeps one connection
// up, re-dialling with backoff whenever it drops; [Source.Connected]
// tells whether it is up, and Open returns an error wrapping
// [bridge.ErrUnavailable] while it is not. Each reader has a channel of
// its own. When the connection drops, the reader's Next waits for the next
// one and consumes again: a stream from the offset after the last message
// it returned, with no gap and no duplicate; a queue where the broker left
// it; an exchange with a new queue, Next then returning an error wrapping
// [bridge.ErrLost] once, since what was published meanwhile is lost.
//
// A stream reader that starts with the next message to arrive knows its
// position only once it has read one: if the connection drops before
// that, it goes on with the next message after the reconnect.
package amqp
