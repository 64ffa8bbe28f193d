// Package kafka is the Kafka source of the bridge: a [Source] reads every
// partition of a topic, merged into one stream, and implements
// [bridge.Source] and [bridge.Connectivity]. It uses
// github.com/segmentio/kafka-go, without a consumer group: nothing is
// committed to the brokers, and a reader's whole state is its
// [bridge.Position].
//
// # URL form
//
// [ParseURL] turns a route's broker URL into a [Config]:
//
//	kafka://[USER:PASS@]HOST:PORT[,HOST:PORT...]/TOPIC[?OPTIONS]
//
// HOST:PORT are the bootstrap brokers and TOPIC the topic. OPTIONS are:
//
//	tls=true                 TLS, verifying the brokers against the system roots
//	sasl=MECHANISM           SASL with USER:PASS: plain, scram-sha-256 or scram-sha-512
//	metadata_interval=5s     how often readers look for new partitions
//
// USER:PASS requires sasl, and sasl requires USER. Any other query
// parameter is an error.
//
// # Positions
//
// Message.Partition and Message.Offset are the Kafka partition and offset.
// A Position has one offset per partition, the offset of the next message
// to read from it, and as many entries as the topic has partitions. Within
// a partition messages come in order; across partitions, in the order they
// arrive. Open at the Position of a reader, taken after any message, goes
// on with no gap and no duplicate.
//
// A position whose offset is before its partition's first (deleted by
// retention) makes Open return a [*bridge.ExpiredError] that names the
// partitions and offsets lost, and whose Resume moves only those
// partitions to their first offset. A partition that a
// position lacks (added to the topic since) is read from its first offset;
// an offset past a partition's end makes Open return an error wrapping
// [bridge.ErrAhead].
//
// # Connections, reconnects and new partitions
//
// A reader reads each partition over its own connection to that
// partition's leader (kafka-go's Conn, fetch after fetch), in a goroutine
// that Close waits for, and hands the messages of each fetch to Next in
// chunks. It reconnects by itself after a leader change or a short broker
// outage, at the offset after the last message it read. When it cannot
// (three connections or fetches in a row failed, the topic was deleted),
// Next returns the error, and the bridge closes the reader and opens a
// new one at its Position, which Open refuses with an error wrapping
// [bridge.ErrUnavailable] until the brokers and the topic are back. Where
// the offset to read next was deleted meanwhile, or is skipped over in a
// fetch and no longer held, Next returns a [*bridge.ExpiredError].
//
// Every [Config.MetadataInterval], each reader reads the topic's metadata:
// partitions added to the topic are then read from their first offset,
// and appended to the Position, and [Source.Connected] tells whether a
// broker answered.
//
// # Topics deleted and created again
//
// A reader's incarnation ([bridge.Incarnated]) is the topic's ID, which
// kafka-go does not expose (its Metadata request stops at version 8): the
// source asks for it with a Metadata request of version 12 that it writes
// and reads itself on kafka-go's connection (so with its TLS and SASL),
// at Open and, from each reader, every second. A topic with another ID,
// fewer partitions, or missing twice in a row makes Next return an error
// wrapping [bridge.ErrReset]. A broker older than Kafka 3.x gives no ID:
// the incarnation is then 0, and a topic created again is told only by a
// position past its end ([bridge.ErrAhead]).
package kafka
