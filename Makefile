# Two commands set up everything on a fresh machine:
#   make demo   - create .venv, install, train on the bundled default dataset
#   make test   - create .venv, install (with test extras), run every test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast venv stream-demo bench clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m pipelines.train --runner=DirectRunner

# Every test, including the heavy (slow/integration) ones.
test: $(STAMP)
	$(PY) -m pytest tests -q -p no:cacheprovider

# Unit tests only.
test-fast: $(STAMP)
	$(PY) -m pytest tests -q -m "not slow and not integration" -p no:cacheprovider

stream-demo: $(STAMP)
	$(PY) -m pipelines.stream_demo

bench: $(STAMP)
	$(PY) -m benchmarks.bench_preprocess
	$(PY) -m benchmarks.bench_stream

clean:
	rm -rf $(VENV) out data build *.egg-info
