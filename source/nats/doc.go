// Package nats is the NATS source of the bridge: a [Source] reads either a
// core NATS subject (live only) or a JetStream stream (with history), and
// implements [bridge.Source].
//
// # URL forms
//
// [ParseURL] turns a route's broker URL into a [Config]:
//
//	nats://[USER:PASS@]HOST:PORT[,HOST:PORT...]/SUBJECT[?OPTIONS]
//	jetstream://[USER:PASS@]HOST:PORT[,HOST:PORT...]/STREAM[?subject=FILTER&OPTIONS]
//
// The nats scheme subscribes to SUBJECT, the URL path without its leading
// slash (percent-decoded; the wildcards * and > are allowed). Core NATS keeps
// no history: the History of its [bridge.Info] is false, Open refuses a start position with
// [bridge.ErrNoHistory], and messages carry no offset.
//
// The jetstream scheme reads the stream STREAM, optionally only the messages
// whose subject matches FILTER. Message.Offset is the stream sequence and a
// Position is the next sequence to read.
//
// OPTIONS, for both schemes, are:
//
//	token=TOKEN              token authentication
//	creds=FILE               a user credentials (JWT and seed) file
//	nkey=FILE                an NKey seed file
//	tls=true                 TLS, verifying the server against the system roots
//	tls_ca=FILE              TLS, verifying the server against these roots
//	tls_cert=FILE&tls_key=FILE
//	                         TLS with a client certificate
//
// At most one of USER:PASS, token, creds and nkey may be given. Any other
// query parameter is an error.
//
// # Connections and reconnects
//
// A Source connects at its first Open (New connects to nothing) and keeps
// its connections up forever after: Open returns an error wrapping
// [bridge.ErrUnavailable] while the connection it needs is down, so that
// the bridge retries.
//
// HOST:PORT may list several servers of a NATS cluster, separated by
// commas: the source connects to one of them, and when that one is lost
// nats.go reconnects to another (those listed, and those the cluster told
// it of), trying each server again after a second.
//
// A JetStream reader's incarnation ([bridge.Incarnated]) is the stream's
// creation time. The source reads the stream's info every second for all
// its readers, and a reader reads it again when it re-creates its
// consumer; its Next returns an error
// wrapping [bridge.ErrReset] once the stream is gone or another one (an
// ordered consumer would go on with the new stream at the old sequence).
// Sequences the consumer skips because retention deleted them are a
// [*bridge.ExpiredError] that counts them: every skipped sequence of a
// stream read whole; on a filtered one, whose skipped sequences are mostly
// other subjects', the filter's messages that were pending after the last
// one read and are no longer there.
//
// A core NATS source has one connection. A JetStream source has two, so
// that replays cannot take down the live stream: the live connection
// serves the route's live reader ([bridge.Start].Live); the replay
// connection, named esbridge-replay, serves every other reader (the
// bridge's catch-up readers). However much the
// replays are sent, and even if the server cuts the replay connection as a
// slow consumer, the live reader goes on; the replays go on too, from
// where they were, once it is back. Connected reports the live connection
// only.
//
// A core NATS reader survives reconnects: its subscription is renewed by the
// client, and Next returns an error wrapping [bridge.ErrLost] once, at the
// place in the stream where the connection dropped (or where the client
// dropped messages because the reader was too slow), then goes on.
//
// A JetStream reader uses a consumer like nats.go's ordered consumer: one
// replica, in memory, unacknowledged, so that it keeps no state worth
// keeping on the server. The reader re-creates it at the sequence after
// the last message it returned, so reading goes on with no gap and no
// duplicate: as soon as its connection reconnected (to another server of
// the cluster, if its server died), when two heartbeats of 500 ms were
// missed (the consumer's server died while the connection is on another),
// and after any error of the consumer. Each attempt waits 1 s at most (a
// cluster electing its JetStream leader drops requests), and the reader
// tries again for 10 s; if that fails, Next returns the error, and the
// bridge closes the reader and opens a new one at its Position, which is
// always the sequence after the last message Next returned. On a
// 3-server cluster delivery resumes within about a second and a half of
// the loss of any server (docs/operations.md).
//
// # Consumers
//
// Each JetStream reader has its own consumer, named esbridge-RANDOM_N,
// where N counts its re-creations. Open creates it under a context of its own (10 s),
// not under its ctx: a consumer requested under a ctx that ends meanwhile
// may still be made on the server, with nothing left to delete it. If ctx
// ends first, Open returns ctx's error at once and deletes the consumer as
// soon as it is made (the Source's Close waits for that). A reader's Close
// deletes its consumer. Consumers also have an inactive threshold of 10 s
// (nats.go's default is 5 minutes), so that the server removes any that
// esbridge could not delete (its connection was down, the bridge stopped)
// within seconds of their last pull request, which waits up to 30 s.
package nats
