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
// chunks. A partition fails alone: when its leader dies, freezes or
// moves, it tells the reader it is stalled ([bridge.Staller]), learns the
// leaders again from the source's check of the topic (asked at once, one
// for every partition that asks meanwhile, at most ten a second) and
// connects to the new leader, at the offset after the last message it
// read, while the other partitions read on. The check asks every broker
// the source knows of at once and takes the first answer, so that a dead
// or frozen broker costs nothing; a fetch that a leader does not answer
// within 2 s past its own wait is given up. Next returns an error only
// for what reconnecting cannot cure (the topic deleted, an authorization
// refused), and the bridge then opens a new reader at its Position. Where
// the offset to read next was deleted meanwhile, or is skipped over in a
// fetch and no longer held, Next returns a [*bridge.ExpiredError].
//
// Open asks each partition's leader for its offsets. A partition whose
// leader does not tell (down, or moving) is read from a client's position
// unchecked, and checks it against its new leader's first answer: an
// offset the broker never issued is then an error wrapping
// [bridge.ErrAhead] from Next.
//
// The topic is checked every second, for each reader: partitions added to
// it are read from their first offset, and appended to the Position, at
// most every [Config.MetadataInterval]; [Source.Connected] tells whether
// a broker answered the last check.
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
