# `make serve` and `make test` set up a fresh machine: they create or refresh .venv and install what is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint bench bench-queue bench-daq schema system-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# systemd-analyze verifies the unit file in the tests; install it when missing (Debian).
system-deps:
	@command -v systemd-analyze >/dev/null 2>&1 || { \
	  echo "installing systemd (for systemd-analyze)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; }

serve: $(STAMP)
	$(BIN)/stationd serve $(ARGS)

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/front_door.py

# stationd against bluesky-queueserver 0.0.25; installs the incumbent into .bench-venv (benchmark only)
# and redis-server (apt) on first use.
bench-queue: $(STAMP)
	$(BIN)/python bench/queue_manager.py $(ARGS)

# DAQ coordinator: start/stop latencies with 10 simulated sources, await wake-up, 100 concurrent DAQs, FITS MB/s.
bench-daq: $(STAMP)
	$(BIN)/python bench/daq.py $(ARGS)

# Regenerate protocol/schema.json (refuses when the schema changed without a PROTOCOL_VERSION bump).
schema: $(STAMP)
	$(BIN)/stationd protocol-schema --write

clean:
	rm -rf $(VENV) build *.egg-info
