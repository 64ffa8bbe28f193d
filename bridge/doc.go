// Package bridge serves broker streams to browsers as Server-Sent Events,
// with the broker position of each message as its event ID.
//
// A [Route] maps an HTTP path to a [Source]: a JetStream stream, a NATS
// subject, a Kafka topic, a RabbitMQ stream or queue (see the packages under
// source/). For each route the bridge keeps one live [Reader] on the source,
// translates each message into an event once, and fans it out to every
// client through an [esource.EventSource].
//
// # Event IDs and resume
//
// An event ID is an opaque, versioned, URL-safe token holding the stream's
// identity and the position after the message: the JetStream sequence, the
// RabbitMQ stream offset, or the next offset of every Kafka partition. The
// ID is the whole resume state: when a browser reconnects with
// Last-Event-ID, any bridge instance serving the same stream continues it
// from its in-memory log, or from the broker, with no event twice and
// none skipped. For sources whose broker keeps no history (core NATS,
// AMQP queues) IDs carry an instance epoch and a sequence instead, and a
// resume the log cannot serve is announced with a gap event (see
// [esource.Gap]). An ID that cannot be resumed from gets a gap event with
// a stable reason: malformed-id (one longer than any the stream issues,
// 13,669 characters for [MaxPartitions], is refused before it is
// decoded), other-stream, no-history, ahead (a position the broker never
// issued, see [ErrAhead]), expired, or history (the broker could not
// replay); the stream then goes on live. The response is still 200, for
// a browser never reconnects after another status.
//
// # Catch-up
//
// A client whose position the log no longer holds rides one of the
// route's catch-up readers: broker readers that each serve every client
// they can, however many resume at once, as after a deploy. A reader
// walks forward from the position of the client that started it, holds
// what it read (translated and encoded once) in a bounded ring, and takes
// any later client whose position it has not yet passed; each rider sends
// from its place in the ring, skipping what it had received, and joins
// the live log once the log holds what follows. A route has at most
// [Options].CatchUpReaders of them (catchup=N, default
// [DefaultCatchUpReaders]); a client that none can take waits for one,
// with heartbeats. A rider too slow for its reader drops off after a
// second and boards again, so that memory is bounded per reader, never
// per client.
//
// # Route options
//
// [Options] are common to all sources and come from a route URL's query:
// start=latest|earliest, type= (none, subject or header:NAME),
// format=raw|envelope and catchup=N. See [ParseOptions].
//
// # Health and figures
//
// [Bridge.Ready] and /readyz tell whether every route's source is
// connected; [Bridge.ServeReadyz] names each route and its state, for an
// admin port ([Config].TerseReadyz keeps the public /readyz to "ready" or
// "not ready"). [Bridge.Stats] returns each route's figures for metrics:
// its event source's counters ([esource.Stats]), its catch-up readers, and
// for a [Headed] source how far its live reader is behind the broker,
// looked up at most once a second. The bridge imports no metrics library:
// a program exports the figures as it likes.
//
// # Payloads
//
// In the raw format, a payload that is valid UTF-8 is the event's data as
// it is (CR and CRLF arrive as LF in a browser); a payload that is not is
// sent as an event of type [BinaryType] whose data is the payload in
// standard base64. In the envelope format the data is a JSON object:
//
//	{"subject": "orders.eu", "sequence": 42, "headers": {"k": ["v"]},
//	 "time": "2026-11-25T18:00:00Z", "data": "payload"}
//
// with "topic", "partition", "offset" and "key" for Kafka, "offset" for
// RabbitMQ streams, and "data_base64" (and "key_base64") in place of
// "data" ("key") when the bytes are not valid UTF-8.
package bridge
