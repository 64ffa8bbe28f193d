#!/usr/bin/env bash
# kafka-cluster.sh runs a real three-node Apache Kafka cluster (KRaft,
# each node a broker and a controller) on 127.0.0.1:19091-19093, for the
# tests of source/kafka that kill, freeze and restart brokers. It uses the
# jars of scripts/kafka.sh (Java 17+ and Maven, not Docker).
#
#   scripts/kafka-cluster.sh start         start the cluster (or reuse one
#                                          that answers), on fresh storage
#   scripts/kafka-cluster.sh stop          stop every node
#   scripts/kafka-cluster.sh status        tell which nodes answer
#   scripts/kafka-cluster.sh brokers       print the brokers' addresses
#   scripts/kafka-cluster.sh pid N         print node N's process ID
#   scripts/kafka-cluster.sh stop-node N   stop node N cleanly (SIGTERM)
#   scripts/kafka-cluster.sh start-node N  start node N again on its
#                                          storage, and wait until it serves
#
# Topics are replicated over the three nodes by default, with
# min.insync.replicas=2: a topic keeps accepting writes with one node down.
# The storage, logs and PID files are under
# $KAFKA_CACHE/kafka-cluster-VERSION (KAFKA_CACHE defaults to
# ~/.cache/esbridge).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")
run=${KAFKA_CACHE:-$HOME/.cache/esbridge}/kafka-cluster-$version
host=127.0.0.1
nodes=(1 2 3)
timeout=${KAFKA_START_TIMEOUT:-120}

log() { printf 'kafka-cluster.sh: %s\n' "$*" >&2; }

# The nodes listen below 20000: tests pick free ports from 20000 to 31999
# for servers they restart (internal/brokertest), and above 32767 the
# kernel hands ports out to connections, so that a port left free while a
# node is down could be taken before it starts again.

port() { echo $((19090 + $1)); }
controller_port() { echo $((19190 + $1)); }
dir() { echo "$run/node$1"; }
pidfile() { echo "$(dir "$1")/kafka.pid"; }

answering() {
	(exec 3<>"/dev/tcp/$host/$1") 2>/dev/null
}

running() {
	local f
	f=$(pidfile "$1")
	[[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

brokers() {
	local list=() n
	for n in "${nodes[@]}"; do
		list+=("$host:$(port "$n")")
	done
	(IFS=,; echo "${list[*]}")
}

configure() {
	local n=$1 d voters=() m
	d=$(dir "$n")
	for m in "${nodes[@]}"; do
		voters+=("$m@$host:$(controller_port "$m")")
	done
	rm -rf "$d"
	mkdir -p "$d/data" "$d/logs"
	cat >"$d/server.properties" <<EOF
process.roles=broker,controller
node.id=$n
listeners=PLAINTEXT://$host:$(port "$n"),CONTROLLER://$host:$(controller_port "$n")
advertised.listeners=PLAINTEXT://$host:$(port "$n")
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
controller.quorum.voters=$(IFS=,; echo "${voters[*]}")
log.dirs=$d/data
num.partitions=6
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
EOF
	cat >"$d/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $d/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
EOF
}

# java_opts sets opts to the options of node $1's Java.
java_opts() {
	local d
	d=$(dir "$1")
	opts=(-Xms128m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true
		-Dlog4j2.configurationFile="$d/log4j2.properties" -Dkafka.logs.dir="$d/logs" -cp "$libs/*")
}

# launch starts node $1 on its storage, without waiting.
launch() {
	local n=$1 d
	d=$(dir "$n")
	java_opts "$n"
	# The broker outlives this script: it must not keep the descriptors it
	# inherits, such as a lock file that the caller holds with flock(1).
	nohup java "${opts[@]}" kafka.Kafka "$d/server.properties" >"$d/logs/stdout.log" 2>&1 </dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
	echo $! >"$(pidfile "$n")"
}

# await waits until node $1 answers and has logged its start after byte
# $2 of its log.
await() {
	local n=$1 from=$2 d deadline=$((SECONDS + timeout))
	d=$(dir "$n")
	until answering "$(port "$n")" && tail -c +$((from + 1)) "$d/logs/server.log" 2>/dev/null | grep -q 'Kafka Server started'; do
		if ! running "$n"; then
			log "node $n exited; last lines of its logs:"
			tail -n 30 "$d/logs/stdout.log" "$d/logs/server.log" >&2 2>/dev/null || true
			return 1
		fi
		if ((SECONDS >= deadline)); then
			log "node $n does not serve after ${timeout}s; logs in $d/logs"
			return 1
		fi
		sleep 0.2
	done
}

logsize() {
	local f
	f="$(dir "$1")/logs/server.log"
	if [[ -f $f ]]; then stat -c %s "$f"; else echo 0; fi
}

start() {
	local n all=1
	for n in "${nodes[@]}"; do
		answering "$(port "$n")" || all=0
	done
	if ((all)); then
		log "the cluster already answers on $(brokers); reusing it"
		return
	fi
	stop
	command -v java >/dev/null || { log "java not found: apt-get install openjdk-17-jre-headless"; exit 1; }
	libs=$("$here/kafka.sh" jars)
	local id
	id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)
	log "formatting storage in $run (cluster $id)"
	for n in "${nodes[@]}"; do
		configure "$n"
		java_opts "$n"
		java "${opts[@]}" kafka.tools.StorageTool format -t "$id" -c "$(dir "$n")/server.properties" \
			>"$(dir "$n")/logs/format.log" 2>&1 || {
			cat "$(dir "$n")/logs/format.log" >&2
			exit 1
		}
	done
	log "starting Kafka $version on $(brokers)"
	for n in "${nodes[@]}"; do
		launch "$n"
	done
	for n in "${nodes[@]}"; do
		await "$n" 0 || { stop; exit 1; }
	done
	log "Kafka $version cluster ready on $(brokers); logs in $run/node*/logs"
}

start_node() {
	local n=$1 from
	if running "$n"; then
		log "node $n is running (pid $(cat "$(pidfile "$n")"))"
		return
	fi
	libs=$("$here/kafka.sh" jars)
	from=$(logsize "$n")
	launch "$n"
	await "$n" "$from"
	log "node $n serves on $host:$(port "$n") (pid $(cat "$(pidfile "$n")"))"
}

stop_node() {
	local n=$1 pid
	if ! running "$n"; then
		rm -f "$(pidfile "$n")"
		return
	fi
	pid=$(cat "$(pidfile "$n")")
	kill -CONT "$pid" 2>/dev/null || true # a frozen node cannot stop
	kill "$pid"
	for _ in $(seq 150); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "node $n (pid $pid) still running after 30s; killing it"
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$(pidfile "$n")"
	log "node $n stopped (pid $pid)"
}

stop() {
	local n
	for n in "${nodes[@]}"; do
		stop_node "$n"
	done
}

status() {
	local n up=0
	for n in "${nodes[@]}"; do
		if answering "$(port "$n")"; then
			echo "node $n answers on $host:$(port "$n")"
			up=$((up + 1))
		else
			echo "node $n does not answer on $host:$(port "$n")"
		fi
	done
	((up > 0))
}

node() {
	[[ ${1:-} =~ ^[123]$ ]] || { echo "usage: $0 $2 1|2|3" >&2; exit 2; }
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
brokers) brokers ;;
pid)
	node "${2:-}" pid
	running "$2" || { log "node $2 is not running"; exit 1; }
	cat "$(pidfile "$2")"
	;;
stop-node)
	node "${2:-}" stop-node
	stop_node "$2"
	;;
start-node)
	node "${2:-}" start-node
	start_node "$2"
	;;
*)
	echo "usage: $0 start|stop|status|brokers|pid N|stop-node N|start-node N" >&2
	exit 2
	;;
esac
