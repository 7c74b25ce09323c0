# Two commands: `make run` starts the gateway, `make test` runs lint, the type checker and the
# whole suite (`make test-fast`: the same checks and only the pure tests, in seconds).
# Both create .venv and install everything on a fresh machine (uv, installed with pip, for speed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint fmt protos bench install clean browser vendor-charts

# The dashboard's browser test drives Debian's chromium (a registry package, never a browser
# build downloaded by a tool). Installed here when missing and we are root; otherwise the
# test is skipped and says why.
CHROMIUM ?= /usr/bin/chromium
# The dashboard's chart library, vendored from the npm registry (docs/observability.md).
UPLOT_VERSION := 1.6.32
UPLOT_DIR := services/ledger/dashboard/static/vendor/uplot

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BIN)/uv: $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check uv

$(STAMP): pyproject.toml $(BIN)/uv
	$(BIN)/uv pip install --python $(BIN)/python -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/switchyard up

browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the dashboard browser test"; \
	    (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null) \
	      || echo "chromium could not be installed: the dashboard browser test will be skipped"; \
	  else \
	    echo "no $(CHROMIUM) and not root: the dashboard browser test will be skipped (apt-get install -y chromium)"; \
	  fi; \
	fi

vendor-charts:
	tmp=$$(mktemp -d) && (cd $$tmp && npm pack -q uplot@$(UPLOT_VERSION) >/dev/null && tar xzf uplot-$(UPLOT_VERSION).tgz) \
	  && cp $$tmp/package/dist/uPlot.iife.min.js $$tmp/package/dist/uPlot.min.css $$tmp/package/LICENSE $(UPLOT_DIR)/ \
	  && rm -rf $$tmp && sha256sum $(UPLOT_DIR)/uPlot.iife.min.js $(UPLOT_DIR)/uPlot.min.css

# The suite runs in TEST_WORKERS processes (pytest-xdist), one test file per process at a time
# (a module's shared stack stays in one process): it mostly waits on processes and timers
# (~40 % of two cores busy when run serially), so three take ~6 minutes where one took ~13.
TEST_WORKERS ?= 3
test: lint browser
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The tests marked `stack` (they start nats-server or service processes) left out.
test-fast: lint
	$(BIN)/python -m pytest -q -m "not stack"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

protos: $(STAMP)
	$(BIN)/python -m switchyard.protogen

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
