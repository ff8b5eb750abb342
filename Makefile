# Two commands set up everything on a fresh machine:
#   make demo   - create .venv, install, train on the bundled default dataset
#   make test   - create .venv, install (with test extras), run every test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast venv stream-demo bench clean bqemulator sysdeps

# The BigQuery API emulator the tests start (beam_ml.testing.bigquery), in its own
# virtualenv: it needs duckdb 1.5.5 and its extension wheels (linked into a scratch
# HOME, as DuckDB would otherwise download them at start). The stamp names the pins,
# so changing them rebuilds the venv.
BQ_VENV ?= .venv-bqemulator
BQ_DUCKDB := 1.5.5
BQ_PINS := bqemulator==1.4.0 duckdb==$(BQ_DUCKDB) duckdb-extension-spatial==$(BQ_DUCKDB) \
	duckdb-extension-avro==$(BQ_DUCKDB) numpy==2.4.6
BQ_STAMP := $(BQ_VENV)/.installed-bqemulator-1.4.0-duckdb-$(BQ_DUCKDB)
# DuckDB names platforms linux_amd64 / linux_arm64.
BQ_PLATFORM := linux_$(shell uname -m | sed -e s/x86_64/amd64/ -e s/aarch64/arm64/)
BQ_EXT := $(BQ_VENV)/home/.duckdb/extensions/v$(BQ_DUCKDB)/$(BQ_PLATFORM)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

venv: $(STAMP)

$(BQ_STAMP):
	rm -rf $(BQ_VENV)
	$(PYTHON) -m venv $(BQ_VENV)
	$(BQ_VENV)/bin/python -m pip install -q --upgrade pip
	$(BQ_VENV)/bin/python -m pip install -q $(BQ_PINS)
	mkdir -p $(BQ_EXT)
	for f in $(BQ_VENV)/lib/python3*/site-packages/duckdb_extension_*/extensions/v$(BQ_DUCKDB)/*.duckdb_extension; do \
	  ln -sf "$$(realpath "$$f")" $(BQ_EXT)/; done
	test -e $(BQ_EXT)/spatial.duckdb_extension && test -e $(BQ_EXT)/avro.duckdb_extension
	touch $(BQ_STAMP)

bqemulator: $(BQ_STAMP)

# Debian packages the tests use: stunnel4 (the TLS terminator in front of the Kafka broker),
# socat, and chromium (every HTML page is checked in a real headless browser). Installed only
# when missing; needs root (CI runs as root) or an existing install.
SYSDEPS := stunnel4 socat chromium
sysdeps:
	@missing=""; for c in stunnel4:stunnel socat:socat chromium:chromium; do \
	  command -v $${c#*:} >/dev/null 2>&1 || missing="$$missing $${c%%:*}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: $(STAMP)
	$(PY) -m pipelines.train --runner=DirectRunner

# Every test: the unit tests on every core (pytest-xdist), then the heavy (slow/integration)
# ones in one process, as they share one broker and emulators per session and measure
# their own pipelines' progress against deadlines.
UNIT := -m "not slow and not integration"
test: sysdeps $(STAMP) $(BQ_STAMP)
	$(PY) -m pytest tests -q -p no:cacheprovider -n auto $(UNIT)
	$(PY) -m pytest tests -q -p no:cacheprovider -m "slow or integration" --durations=25

# Unit tests only.
test-fast: $(STAMP)
	$(PY) -m pytest tests -q -p no:cacheprovider -n auto $(UNIT)

stream-demo: $(STAMP)
	$(PY) -m pipelines.stream_demo --clean

bench: $(STAMP)
	$(PY) -m benchmarks.bench_preprocess
	$(PY) -m benchmarks.bench_stream

clean:
	rm -rf $(VENV) $(BQ_VENV) out data build *.egg-info
