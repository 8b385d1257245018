# crossmodal: set-up, code generation, tests, demo and benchmarks.
# Every target installs what it needs; `make demo` and `make test` work on a fresh clone.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
EXPORT_STAMP := $(VENV)/.installed-export
PROTO_DIR := protos
PROTOS := $(wildcard $(PROTO_DIR)/crossmodal/v1/*.proto)
GEN_DIR := crossmodal/v1
# google/api/annotations.proto (the protos' HTTP mappings) ships with googleapis-common-protos.
GOOGLEAPIS_INCLUDE = $(shell $(PY) scripts/check_protos.py --include-path)

.PHONY: setup setup-export protos protos-check config-table nats image test test-all demo bench reliability lint typecheck clean

# The virtualenv with the service packages, the dev tools and the package in editable mode.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $@

setup: $(STAMP)

# torch (CPU build) and open_clip for the exporter, the demo-model trainer and the parity tests.
$(EXPORT_STAMP): $(STAMP)
	$(PIP) install --quiet -c constraints.txt -e '.[dev,export,bench]'
	touch $@

setup-export: $(EXPORT_STAMP)

protos: $(STAMP)
	$(PY) -m grpc_tools.protoc -I $(PROTO_DIR) -I $(GOOGLEAPIS_INCLUDE) --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)
	touch $(GEN_DIR)/__init__.py

# Fails when the checked-in generated code differs from what `make protos` would write.
protos-check: $(STAMP)
	$(PY) scripts/check_protos.py

# Rewrites the README's configuration table from the services' typed settings (a test checks it is current).
config-table: $(STAMP)
	$(PY) scripts/config_table.py --update README.md

# nats-server, the write log's JetStream server: clusters with more than one replica per shard start one
# (crossmodal up, the tests, the benchmarks). Fails with a message saying how when it cannot be installed.
nats:
	bash scripts/install_nats.sh

# The service image (docker/Dockerfile), built with the Docker engine (installed and started when none runs).
# BASE=registry (python:3.11-slim-bookworm) or BASE=local (a Debian base made here with mmdebstrap: no
# registry needed); IMAGE (default crossmodal), TAG (default: the project's version), VARIANT=cpu|cuda,
# PUSH=1 to push IMAGE:TAG afterwards. Prints the size; see the README's "Container image".
BASE ?= registry
IMAGE ?= crossmodal
TAG ?=
VARIANT ?= cpu
image: $(STAMP)
	bash scripts/image.sh --base $(BASE) --image $(IMAGE) $(if $(TAG),--tag $(TAG)) --variant $(VARIANT) \
		$(if $(PUSH),--push) --python $(abspath $(PY))

# docker_engine.sh --optional: the image tests run when a Docker engine can be had, and skip (saying why) otherwise.
test: $(EXPORT_STAMP) protos-check nats
	bash scripts/install_prometheus.sh
	bash scripts/install_chromium.sh
	bash scripts/docker_engine.sh --optional
	$(PY) -m pytest -q

test-all: $(EXPORT_STAMP) protos-check nats
	bash scripts/install_prometheus.sh
	bash scripts/install_chromium.sh
	$(PY) -m pytest -q -m ''

demo: $(STAMP)
	$(PY) -m crossmodal.cli demo

bench: $(EXPORT_STAMP) nats
	$(PY) bench/run_all.py

# The fault, fuzz and security tests (the slow kill-9 rounds included) and the overload benchmark, each
# recording what held, then the README's "Reliability" table rebuilt from those records (12 min on an idle 2-core machine).
RELIABILITY_LOG := build/reliability/tests.jsonl
reliability: $(EXPORT_STAMP) protos-check nats
	bash scripts/install_prometheus.sh
	rm -f $(RELIABILITY_LOG)
	CROSSMODAL_RELIABILITY_LOG=$(RELIABILITY_LOG) $(PY) -m pytest -q -m '' tests/faults tests/fuzz tests/security \
		tests/gateway/test_faults.py
	$(PY) bench/bench_overload.py
	$(PY) scripts/reliability_report.py --log $(RELIABILITY_LOG) --update README.md

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy services crossmodal

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info bench/results/*.json bench/results/*.md
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
