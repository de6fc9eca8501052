# The two commands of the README: `make run` and `make test`.
SHELL := /bin/bash
STACK := deploy/local/stack.sh

.PHONY: setup jaeger toxiproxy fuzz run test lint config-reference schema-snapshot stack-up stack-down stack-status build release up down up-replicated down-replicated up-secure down-secure bench bench-quick bench-event-path chaos chaos-quick

# What the stack and the build need, installed when this machine lacks it (see the script).
setup:
	deploy/local/setup.sh

build: setup
	cargo build --workspace

release: setup
	cargo build --workspace --release --bins

# The whole system as plain processes: the stack, loms, three notifiers. Ctrl-C stops all of it.
run: release
	deploy/local/run.sh

# A stack of its own on free ports (unless DATABASE_URL and KAFKA_BROKERS name one), the whole
# test suite against it, and the stack stopped afterwards, even on failure.
test: setup jaeger toxiproxy
	cargo build --workspace --all-targets
	deploy/local/with-stack.sh cargo test --workspace --no-fail-fast

# Jaeger (v2, all in one), built once from the Go module proxy (about 6 minutes) and cached: the
# tests export spans to it; `make run` starts it when it is built.
jaeger: setup
	deploy/local/jaeger.sh >/dev/null

# Toxiproxy, built once from the Go module proxy (under a minute) and cached: chaos puts it
# between loms and PostgreSQL to cut a connection silently.
toxiproxy: setup
	deploy/local/toxiproxy.sh >/dev/null

# Records the released schemas (api/, events-proto/ schema-snapshot.txtpb) on purpose, for a
# release: `make test` refuses any change to the protos that breaks a reader of the snapshot.
schema-snapshot:
	cargo run -q -p build-support --bin schema-snapshot

# The fuzz campaign (cargo-fuzz, libFuzzer, nightly): each target for FUZZ_SECONDS (60); the
# corpus it keeps is replayed by the test suite.
fuzz:
	deploy/local/fuzz.sh

# Rewrites the configuration reference (docs/configuration.md) and the JSON Schemas of both
# services' files (docs/schema/) from the settings types; `make test` fails while they are stale.
config-reference:
	UPDATE_REFERENCE=1 cargo test -q -p systest --test config_reference

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	# Production code (libraries and programs, not tests): no function over 60 lines (clippy.toml).
	cargo clippy --workspace --lib --bins -- -D warnings -W clippy::too_many_lines

stack-up:
	$(STACK) up

stack-down:
	$(STACK) down

stack-status:
	$(STACK) status

# The compose deployment (needs a Docker engine): kafka-ui on http://localhost:8080.
up:
	docker compose -f deploy/docker-compose.yml up --build -d

down:
	docker compose -f deploy/docker-compose.yml down

# The same with a three-node Kafka (replication factor 3, min.insync.replicas 2).
up-replicated:
	docker compose -f deploy/docker-compose.replicated.yml up --build -d

down-replicated:
	docker compose -f deploy/docker-compose.replicated.yml down

# The same with every connection encrypted and authenticated (deploy/docker-compose.secure.yml).
up-secure:
	docker compose -f deploy/docker-compose.yml -f deploy/docker-compose.secure.yml up --build -d

down-secure:
	docker compose -f deploy/docker-compose.yml -f deploy/docker-compose.secure.yml down

# Figures of the real system on a private stack: target/bench/results.json.
bench: release
	deploy/local/with-stack.sh target/release/bench

bench-quick: release
	deploy/local/with-stack.sh target/release/bench --quick

# The event path's candidate settings (producer linger, consumer fetch) end to end at 100, 500
# and 1,000 orders/s: latency and CPU per order of the broker, loms and the notifier.
bench-event-path: release
	deploy/local/with-stack.sh target/release/bench --event-path

# Faults injected into a private stack under load: target/chaos/report.json; fails if anything
# was lost, reordered or invented.
# Then the three-node cluster's scenarios (leader kill, rolling restart, too few in-sync
# replicas) on a stack of their own, added to the same report; then PostgreSQL's failover to
# its synchronous standby, on a stack with one.
chaos: release toxiproxy
	deploy/local/with-stack.sh target/release/chaos
	KAFKA_NODES=3 deploy/local/with-stack.sh target/release/chaos --replicated
	PG_STANDBY=1 deploy/local/with-stack.sh target/release/chaos --standby

chaos-quick: release toxiproxy
	deploy/local/with-stack.sh target/release/chaos --quick
	KAFKA_NODES=3 deploy/local/with-stack.sh target/release/chaos --replicated --quick
	PG_STANDBY=1 deploy/local/with-stack.sh target/release/chaos --standby --quick
