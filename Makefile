# attnserve — the two commands of the quick start:
#   make run    set everything up, serve the default model, predict a sample, write overlay.png
#   make test   set everything up, lint, type-check and run the tests
PYTHON ?= python3
VENV   ?= .venv
OVERLAY ?= overlay.png
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.attnserve-installed

.PHONY: run test setup lint typecheck system-tools proto clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: 2.13.0 is the CPU build on the build machines' disk
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/attnserve setup
	touch $@

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/attnserve demo --overlay $(OVERLAY)

test: $(STAMP) lint typecheck system-tools
	$(BIN)/python -m pytest

# Debian packages some tests drive: chromium (the web page, headless through Playwright) and
# promtool (the Prometheus config in deploy/). Installed once; without them those tests skip.
SYSTEM_TOOLS := chromium:chromium promtool:prometheus
system-tools:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	[ -z "$$missing" ] || { \
	  echo "installing Debian's$$missing for the tests ..."; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	} || echo "warning:$$missing could not be installed: the tests that need them will be skipped"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/python tools/typecheck.py

proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=. --pyi_out=. --grpc_python_out=. proto/attnserve/v1/attnserve.proto

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build
