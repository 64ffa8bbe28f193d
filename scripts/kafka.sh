#!/usr/bin/env bash
# kafka.sh runs a real single-node Apache Kafka broker (KRaft, combined
# broker and controller) on 127.0.0.1:9092 for the tests of source/kafka.
# It needs Java 17+ and Maven, not Docker.
#
#   scripts/kafka.sh start    start it (or reuse one answering on 9092)
#   scripts/kafka.sh stop     stop the broker this script started
#   scripts/kafka.sh restart  stop and start it again, keeping its data
#   scripts/kafka.sh status   tell whether a broker answers on 9092
#   scripts/kafka.sh jars     fetch the jars; print their directory
#                             (scripts/kafka-cluster.sh uses it)
#
# The jars come from Maven Central through scripts/kafka/pom.xml, copied
# once into $KAFKA_CACHE/kafka-VERSION/libs (KAFKA_CACHE defaults to
# ~/.cache/esbridge). Each start formats a fresh, empty storage under
# $KAFKA_CACHE/kafka-VERSION/run, which also holds the PID file and logs.
#
# With KAFKA_BROKERS set, the tests use that cluster: start and stop do
# nothing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pom=$here/kafka/pom.xml
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
cache=${KAFKA_CACHE:-$HOME/.cache/esbridge}/kafka-$version
libs=$cache/libs
run=$cache/run
pidfile=$run/kafka.pid
host=127.0.0.1
port=9092
controller_port=9093
timeout=${KAFKA_START_TIMEOUT:-120}

log() { printf 'kafka.sh: %s\n' "$*" >&2; }

# answering reports whether something accepts TCP connections on port $1.
answering() {
	(exec 3<>"/dev/tcp/$host/$1") 2>/dev/null
}

# running reports whether the broker of the PID file is alive.
running() {
	[[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

fetch() {
	if [[ -f $libs/.complete ]]; then
		return
	fi
	command -v mvn >/dev/null || { log "mvn not found: apt-get install maven"; exit 1; }
	log "fetching Kafka $version jars into $libs"
	rm -rf "$libs"
	mkdir -p "$libs"
	mvn -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$libs" >"$cache/mvn.log" 2>&1 || {
		tail -n 40 "$cache/mvn.log" >&2
		log "mvn failed; its output is in $cache/mvn.log"
		exit 1
	}
	touch "$libs/.complete"
}

configure() {
	rm -rf "$run"
	mkdir -p "$run/data" "$run/logs"
	cat >"$run/server.properties" <<EOF
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://$host:$port,CONTROLLER://$host:$controller_port
advertised.listeners=PLAINTEXT://$host:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
controller.quorum.voters=1@$host:$controller_port
log.dirs=$run/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
# Fast retention, so that tests can make old offsets disappear: topics set
# retention.ms and segment.ms (or segment.bytes) of their own.
log.retention.check.interval.ms=1000
log.segment.delete.delay.ms=0
log.initial.task.delay.ms=0
file.delete.delay.ms=0
log.flush.offset.checkpoint.interval.ms=1000
EOF
	cat >"$run/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $run/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
EOF
}

java_opts=(-Xms128m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true
	-Dlog4j2.configurationFile="$run/log4j2.properties"
	-Dkafka.logs.dir="$run/logs" -cp "$libs/*")

start() {
	if [[ -n ${KAFKA_BROKERS:-} ]]; then
		log "KAFKA_BROKERS=$KAFKA_BROKERS: using that cluster"
		return
	fi
	if answering $port; then
		log "a broker already answers on $host:$port; reusing it"
		return
	fi
	if running; then
		log "stopping a broker that does not answer (pid $(cat "$pidfile"))"
		stop
	fi
	command -v java >/dev/null || { log "java not found: apt-get install openjdk-17-jre-headless"; exit 1; }
	fetch
	if [[ ${1:-} == keep && -f $run/data/meta.properties ]]; then
		log "keeping the storage in $run/data"
	else
		configure
		# A cluster ID is 16 random bytes in unpadded base64url.
		local id
		id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)
		log "formatting storage in $run/data (cluster $id)"
		java "${java_opts[@]}" kafka.tools.StorageTool format -t "$id" -c "$run/server.properties" \
			>"$run/logs/format.log" 2>&1 || {
			cat "$run/logs/format.log" >&2
			exit 1
		}
	fi
	local logsize=0
	[[ -f $run/logs/server.log ]] && logsize=$(stat -c %s "$run/logs/server.log")
	log "starting Kafka $version on $host:$port"
	# The broker outlives this script: it must not keep the descriptors it
	# inherits, such as a lock file that the caller holds with flock(1).
	nohup java "${java_opts[@]}" kafka.Kafka "$run/server.properties" \
		>"$run/logs/stdout.log" 2>&1 </dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
	echo $! >"$pidfile"
	local deadline=$((SECONDS + timeout))
	until answering $port && tail -c +$((logsize + 1)) "$run/logs/server.log" 2>/dev/null | grep -q 'Kafka Server started'; do
		if ! running; then
			log "the broker exited; last lines of its logs:"
			tail -n 30 "$run/logs/stdout.log" "$run/logs/server.log" >&2 2>/dev/null || true
			exit 1
		fi
		if ((SECONDS >= deadline)); then
			log "no broker on $host:$port after ${timeout}s; logs in $run/logs"
			stop
			exit 1
		fi
		sleep 0.2
	done
	log "Kafka $version ready on $host:$port (pid $(cat "$pidfile")); logs in $run/logs"
}

stop() {
	if [[ -n ${KAFKA_BROKERS:-} ]]; then
		log "KAFKA_BROKERS=$KAFKA_BROKERS: not ours to stop"
		return
	fi
	if ! running; then
		rm -f "$pidfile"
		log "no broker of this script is running"
		return
	fi
	local pid
	pid=$(cat "$pidfile")
	kill "$pid"
	for _ in $(seq 150); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "pid $pid still running after 30s; killing it"
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$pidfile"
	log "stopped (pid $pid)"
}

status() {
	if [[ -n ${KAFKA_BROKERS:-} ]]; then
		echo "KAFKA_BROKERS=$KAFKA_BROKERS"
	elif answering $port; then
		if running; then
			echo "running on $host:$port (pid $(cat "$pidfile")); logs in $run/logs"
		else
			echo "a broker not started by this script answers on $host:$port"
		fi
	else
		echo "not running"
		return 1
	fi
}

case ${1:-} in
start) start ;;
stop) stop ;;
restart)
	# Stop and start again on the same storage: the topics and messages
	# stay, as after a broker crash.
	stop
	start keep
	;;
status) status ;;
jars)
	fetch
	echo "$libs"
	;;
*)
	echo "usage: $0 start|stop|restart|status|jars" >&2
	exit 2
	;;
esac
