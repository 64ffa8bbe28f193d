// Package esource serves Server-Sent Events: one stream of events, fanned
// out to any number of HTTP clients, exactly as the WHATWG HTML standard
// defines the text/event-stream format and as browsers' EventSource
// consumes it. It uses the standard library only and knows nothing of
// message brokers.
//
// # Publishing and fan-out
//
// [EventSource.Publish] encodes an [Event] once and appends it to a bounded
// in-memory log (see [WithBacklog] and [WithBacklogBytes]). Every client
// shares those bytes: a client is a cursor into the log, served by one
// writer goroutine (its HTTP handler) that wakes when the log grows, writes
// all it has not sent yet in one write, and flushes. A publisher never waits
// for a client, and no lock is held while writing to a socket.
//
// # Resume and gaps
//
// A browser that reconnects sends the ID of the last event it received in
// the Last-Event-ID header (a first request may pass it as the lastEventId
// query parameter). If the log still holds that event, the client continues
// right after it. If not, the [History] hook, when there is one, replays
// what the client missed from wherever the events came from and hands the
// client over to the log with no event twice and none skipped. Without a
// hook, the client receives an event of type "gap" (see [Gap]) saying why,
// and the stream goes on. A client too slow for the log is treated the same
// way, so slowness costs replays or an announced gap, never a stalled
// publisher, a silent drop or unbounded memory. The response is always
// 200: a browser never reconnects after any other status.
//
// A client's [Start] is decided once, when it connects: [EventSource.StartOf]
// reads it from the request, or a handler makes its own (a start at a
// time, or a gap for a start it refuses), and [EventSource.Serve], the one
// serving entry, takes it. A History whose event IDs are positions (an
// [Ordering]) has each ID decoded once, when its event is published and
// when a client connects; the log keeps the decoded [Position] and
// compares decoded values only. A History may serve many clients from one
// reader: [Encode] encodes an event once, and [Replay.SendEncoded] sends
// it by reference, applying the same hand-off rule as the log (skip what
// the client has, re-ID what it stands past in other partitions);
// [Replay.Wait] waits with heartbeats. A gap's reason is a stable code
// ([GapError] lets the History choose it), and it repeats at most
// [MaxEchoedID] bytes of a client's ID, as do the logs.
//
// # Merged streams
//
// [ServeMerged] serves several EventSources on one response, each [Part]
// from its own start and through its own filter, as a client of each,
// with its events typed by the part's name and an ID that a [MergedID]
// makes from every part's ID. The events' data lines are the logs' own
// bytes; only the ID and type lines are written per client.
//
// # Lifetime
//
// Heartbeat comments keep idle streams alive and find dead clients; every
// write has a deadline ([WithWriteTimeout]). [EventSource.Shutdown] sends
// each client what was published, then a short jittered retry line, and
// ends the stream, so that browsers reconnect (to another instance, behind
// a load balancer) and resume from their IDs.
//
// [EventSource.Stats] reads its counters (clients, events, bytes sent,
// replays, slow clients, gap events by reason) for metrics; they cost a
// counter per write to a client, nothing per event.
//
// # What changed since the 2013 esource
//
// This package keeps the names of the 2013 package of the same name where
// they still fit, and fixes what it got wrong:
//
//   - [Event] keeps ID, Type and Data, and [Event.WriteTo]. The ID is now a
//     string chosen by the publisher (a broker position, say) rather than an
//     int the package assigned, so that any server can resume any client.
//     WriteTo returns an error for an ID or type that would break the
//     stream (CR, LF, NUL) instead of writing it, splits data at CR, LF and
//     CRLF, and never writes invalid UTF-8.
//   - [New] keeps its name and takes options, returning an error instead of
//     relying on package-level variables.
//   - The Events channel is gone: a send after Close panicked. Use
//     [EventSource.Publish], which returns [ErrClosed] instead.
//   - [EventSource.ServeHTTP], [EventSource.SetBacklog] and
//     [EventSource.Close] keep their names; Close no longer leaves later
//     calls undefined: they return ErrClosed. [EventSource.Shutdown] adds a
//     graceful end that waits.
//   - [EventSource.Tee] keeps its name and now returns an iterator that
//     resumes after an ID exactly as an HTTP client does.
//   - [ContentType] and [DefaultBacklog] are constants; the mutable
//     package-level variables are gone, configuration is per EventSource.
//   - BufferSize is gone, and with it the per-connection buffer that
//     silently dropped events for slow clients: clients share the log, and
//     a client that falls behind it is caught up or told of its gap.
package esource
