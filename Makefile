# The project's vocabulary: install, test, demo, lint, bench, chaos.
PYTHON ?= $(shell .ci/find-python)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install lock test unit integration lint format demo bench chaos kafka-up kafka-down clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-dev.lock
	@command -v promtool >/dev/null || { echo "installing promtool (Debian package prometheus)"; \
		apt-get install -y --no-install-recommends prometheus >/dev/null || \
		{ echo "promtool is needed by the tests: apt-get install prometheus" >&2; exit 1; }; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "installing PostgreSQL (Debian package postgresql)"; \
		apt-get install -y --no-install-recommends postgresql >/dev/null || \
		{ echo "PostgreSQL is needed by the tests: apt-get install postgresql" >&2; exit 1; }; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

## lock: resolve pyproject.toml's ranges afresh into the pinned lock files
## (requirements.lock for the image, requirements-dev.lock for make install and CI).
lock:
	rm -rf .cache/lock
	$(PYTHON) -m venv .cache/lock/runtime && .cache/lock/runtime/bin/pip install -q .
	.cache/lock/runtime/bin/pip freeze --exclude-editable | grep -v '^order-pipeline' \
		| sed '1i # Runtime dependencies, pinned: what the image installs. Regenerate with `make lock`.' \
		> requirements.lock
	$(PYTHON) -m venv .cache/lock/dev && .cache/lock/dev/bin/pip install -q '.[dev]'
	.cache/lock/dev/bin/pip freeze --exclude-editable | grep -v '^order-pipeline' \
		| sed '1i # Runtime and development dependencies, pinned: what `make install` and CI install.' \
		> requirements-dev.lock
	rm -rf .cache/lock

## test: lint, unit tests, then integration and short chaos tests on a real Kafka
## (the local broker is started from Maven Central jars unless
## PIPELINE_KAFKA_BOOTSTRAP_SERVERS points at one).
test: install lint
	$(BIN)/pytest

unit: install
	$(BIN)/pytest -m unit

integration: install
	$(BIN)/pytest -m "integration or chaos"

lint: install
	$(BIN)/ruff check pipeline schemas tests examples
	$(BIN)/ruff format --check pipeline schemas tests examples
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix pipeline schemas tests examples
	$(BIN)/ruff format pipeline schemas tests examples

demo: install
	$(BIN)/pipeline demo --orders 10000

bench: install
	$(BIN)/pipeline bench --json bench-results.json

chaos: install
	$(BIN)/pipeline chaos --orders 20000 --kills 20 --guarantee exactly_once --json
	$(BIN)/pipeline chaos --orders 20000 --kills 20 --guarantee at_least_once --json
	PIPELINE_LOCAL_KAFKA_PORT=19092 PIPELINE_LOCAL_KAFKA_CONTROLLER_PORT=19093 \
		$(BIN)/pipeline chaos --brokers 3 --orders 5000 --guarantee exactly_once --json
	PIPELINE_LOCAL_KAFKA_PORT=19092 PIPELINE_LOCAL_KAFKA_CONTROLLER_PORT=19093 \
		$(BIN)/pipeline chaos --brokers 3 --orders 5000 --guarantee at_least_once --json

kafka-up: install
	$(BIN)/pipeline kafka up

kafka-down: install
	$(BIN)/pipeline kafka down

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
