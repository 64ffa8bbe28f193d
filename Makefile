# The one test command: `make test`. It installs what the tests need, starts
# a real Kafka broker (scripts/kafka.sh: Apache Kafka from Maven Central, run
# with java; reused if running; KAFKA_BROKERS points at another) and a real
# RabbitMQ (scripts/rabbitmq.sh: Debian's rabbitmq-server, installed if
# missing; reused if running; AMQP_URL points at another), installs Debian's
# Chromium and the npm packages of the browser tests and Debian's HAProxy
# for the rolling-deploy test (e2e/setup.sh), and
# runs the linters and every test with the race detector, packages in
# parallel (go test's default -p, GOMAXPROCS). NATS tests embed nats-server;
# the tests of every package share the Kafka and RabbitMQ brokers, and the
# few that restart one take it for themselves first (a lock file per broker,
# see internal/brokertest).

STATICCHECK_VERSION := v0.8.2
TOOLS := $(CURDIR)/.tools/bin
export PATH := $(TOOLS):$(PATH)

.PHONY: test lint hygiene tools bench

test: lint
	scripts/kafka.sh start
	scripts/kafka-cluster.sh start
	scripts/rabbitmq.sh start
	e2e/setup.sh
	go test -race -count=1 ./...

lint: tools hygiene
	@unformatted=$$(gofmt -l . ); if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	go vet ./...
	staticcheck ./...
	cd bench && go build ./... && go vet ./... && staticcheck ./...

# No build outputs in the repository: no tracked file over 1 MB but the
# images of docs/; go.mod and go.sum of both modules tidy.
hygiene:
	@big=$$(git ls-files -z | xargs -0 -r stat -c '%s %n' | awk '$$1 > 1048576 {print $$2}' | grep -Ev '^docs/.*\.(png|jpg|jpeg|gif|svg)$$' || true); \
	if [ -n "$$big" ]; then echo "tracked files over 1 MB (build outputs belong in .gitignore):"; echo "$$big"; exit 1; fi
	go mod tidy -diff
	cd bench && go mod tidy -diff

tools: $(TOOLS)/staticcheck

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# The fan-out benchmark against r3labs/sse and tmaxmax/go-sse (a few minutes).
bench:
	cd bench && go run .
