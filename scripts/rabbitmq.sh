#!/usr/bin/env bash
# rabbitmq.sh runs Debian's RabbitMQ server on 127.0.0.1:5672 for the
# tests of source/amqp (stream queues work over AMQP 0-9-1 from 3.9 on).
#
#   scripts/rabbitmq.sh start    install it if missing, start it (or reuse
#                                one answering on 5672), wait until it runs
#   scripts/rabbitmq.sh stop     stop it
#   scripts/rabbitmq.sh restart  restart the RabbitMQ application in its
#                                Erlang node (stop_app, start_app): every
#                                connection drops, streams are kept
#   scripts/rabbitmq.sh status   tell whether a broker answers on 5672
#
# It needs root (apt-get and rabbitmqctl). With AMQP_URL set, the tests use
# that broker: start, stop and restart do nothing.
set -euo pipefail

host=127.0.0.1
port=5672
timeout=${RABBITMQ_START_TIMEOUT:-120}

log() { printf 'rabbitmq.sh: %s\n' "$*" >&2; }

# answering reports whether something accepts TCP connections on the port.
answering() {
	(exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

install() {
	if command -v rabbitmq-server >/dev/null; then
		return
	fi
	log "installing Debian's rabbitmq-server"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq rabbitmq-server >/dev/null
}

# await waits until the node runs the RabbitMQ application and accepts
# AMQP connections.
await() {
	local deadline=$((SECONDS + timeout))
	# The node first, which a fresh -detached start takes a moment to be.
	until rabbitmqctl -q ping >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			log "no RabbitMQ node after ${timeout}s; logs in /var/log/rabbitmq"
			exit 1
		fi
		sleep 0.5
	done
	rabbitmqctl -q await_startup --timeout "$timeout" >/dev/null
	until answering; do
		if ((SECONDS >= deadline)); then
			log "no broker on $host:$port after ${timeout}s; logs in /var/log/rabbitmq"
			exit 1
		fi
		sleep 0.2
	done
}

start() {
	if [[ -n ${AMQP_URL:-} ]]; then
		log "AMQP_URL is set: using that broker"
		return
	fi
	install
	if answering; then
		log "a broker already answers on $host:$port; reusing it"
		return
	fi
	if rabbitmqctl -q ping >/dev/null 2>&1; then
		# The node runs (started by the package, perhaps still booting);
		# start_app starts its application if stopped, else does nothing.
		log "starting the RabbitMQ application in the running node"
		rabbitmqctl -q start_app || true
	else
		log "starting rabbitmq-server"
		rabbitmq-server -detached
	fi
	await
	log "RabbitMQ $(rabbitmqctl -q version 2>/dev/null || true) ready on $host:$port"
}

stop() {
	if [[ -n ${AMQP_URL:-} ]]; then
		log "AMQP_URL is set: not ours to stop"
		return
	fi
	rabbitmqctl -q stop >/dev/null 2>&1 || log "no RabbitMQ node running"
}

restart() {
	if [[ -n ${AMQP_URL:-} ]]; then
		log "AMQP_URL is set: not ours to restart"
		exit 1
	fi
	rabbitmqctl -q stop_app
	rabbitmqctl -q start_app
	await
}

status() {
	if [[ -n ${AMQP_URL:-} ]]; then
		echo "AMQP_URL is set"
	elif answering; then
		echo "a broker answers on $host:$port"
	else
		echo "not running"
		return 1
	fi
}

case ${1:-} in
start | stop | restart | status) "$1" ;;
*)
	echo "usage: $0 start|stop|restart|status" >&2
	exit 2
	;;
esac
