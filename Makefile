# Quick start: `make serve` runs the server with its embedded defaults; `make test`
# runs the test suite. Both set up everything they need on a fresh machine first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: serve test setup images lint bench clean grpc-stubs

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# The cell images, built offline (base by debootstrap, cell from a wheelhouse); only
# where a Docker Engine answers: elsewhere use `--runtime process`.
images: setup
	@if docker info >/dev/null 2>&1; then \
		scripts/build-base-image.sh && PYTHON=$(PY) scripts/build-cell-image.sh >/dev/null; \
	else \
		echo "no Docker Engine: skipping the cell images (cells can run with --runtime process)"; \
	fi

serve: images
	$(VENV)/bin/deployserver serve

test: images
	$(PY) -m pytest $(PYTEST_ARGS)

# The benchmarks (bench/): ratios against baselines, printed and written to bench/results/.
bench: images
	$(PY) -m bench $(BENCH_ARGS)

# The gRPC service's Python modules, from serving_cell/protocols/v2grpc/inference.proto.
grpc-stubs: setup
	PYTHON=$(PY) scripts/generate-grpc-stubs.sh

# Lint and types, as CI runs them before the tests (and .pre-commit-config.yaml on commit).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
