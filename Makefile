# Sluice: `make demo` and `make test` set up everything they need on a fresh Debian machine with Swift.
SWIFT ?= swift
# CI builds with warnings as errors (CI=true is set by the CI runner).
ifeq ($(CI),true)
SWIFT_FLAGS += -Xswiftc -warnings-as-errors
endif
PYTHON_TEST_PACKAGES := confluent-kafka duckdb pandas jsonschema mypy openapi-spec-validator schemathesis
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build release test demo chaos check-deploy clean

all: build

# librdkafka (Debian's librdkafka-dev 2.0.2), jemalloc (the allocator `sluice` links), SQLite (the store's index) and
# pkg-config for the build; Python's confluent-kafka, the foreign client the tests talk to the broker with, DuckDB
# and pandas, with which the tests read the store as its users do, mypy, which checks the Python client's types, and
# openapi-spec-validator and schemathesis, which check the gateway's OpenAPI document and fuzz it.
deps:
	@{ pkg-config --exists rdkafka && pkg-config --exists jemalloc && pkg-config --exists sqlite3; } 2>/dev/null || { \
		echo "installing librdkafka-dev, libjemalloc-dev, libsqlite3-dev and pkg-config"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq librdkafka-dev libjemalloc-dev libsqlite3-dev \
			pkg-config >/dev/null; }
	@python3 -c 'import confluent_kafka, duckdb, pandas, jsonschema, mypy, openapi_spec_validator, schemathesis' \
		2>/dev/null || { \
		echo "installing confluent-kafka, duckdb, pandas, jsonschema, mypy, openapi-spec-validator and schemathesis (pip)"; \
		python3 -m pip install -q $(PYTHON_TEST_PACKAGES) 2>/dev/null || \
		python3 -m pip install -q --break-system-packages $(PYTHON_TEST_PACKAGES); }

build: deps
	$(SWIFT) build $(SWIFT_FLAGS)

release: deps
	$(SWIFT) build -c release $(SWIFT_FLAGS)

# The in-process suites run first, one at a time and alone: the consumer-group suites' timing assertions do not hold
# beside the end-to-end suites, which load both cores with brokers and workers (docs/operations.md has the mock's
# limits). The end-to-end suites (SluiceCLITests: real processes) spend most of their time waiting on those processes,
# so they then run in two shards side by side, each one suite after another; the first shard's report follows the
# second's. `--ignore-lock`: the two share the build directory, in which nothing is built any more.
E2E_SHARD := SluiceCLITests\.(ChaosTests|MaterializerTests|PythonClientTests|BrokerCommandTests)
SWIFT_TEST = SLUICE_SWIFT_BUILD_FLAGS="$(SWIFT_FLAGS)" $(SWIFT) test --skip-build --ignore-lock --disable-xctest \
	--no-parallel $(SWIFT_FLAGS)
test: deps
	$(SWIFT) build --build-tests $(SWIFT_FLAGS)
	$(SWIFT_TEST) --skip SluiceCLITests
	$(SWIFT_TEST) --filter '$(E2E_SHARD)' > .build/e2e-shard.log 2>&1 & shard=$$!; \
		$(SWIFT_TEST) --filter SluiceCLITests --skip '$(E2E_SHARD)'; status=$$?; \
		wait $$shard; shard_status=$$?; echo "--- the shard $(E2E_SHARD):"; cat .build/e2e-shard.log; \
		test $$status -eq 0 -a $$shard_status -eq 0

# The container image definition, the compose file and the Kubernetes manifests of deploy/, checked against their
# schemas and linters (tools from PyPI, installed under .build/deploy-tools).
check-deploy:
	@deploy/ci/check.sh

# The embedded broker, workers in three capture modes, digits requests and what each mode tracked.
demo: build
	@scripts/demo.sh

# The full chaos suite (scripts/chaos.py): hostile input in every capture mode, kill -9 loops, a frozen broker,
# membership churn; one JSON line of figures per scenario. `make test` runs its short form.
chaos: build
	@python3 scripts/chaos.py

clean:
	rm -rf .build
