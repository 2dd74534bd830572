# attnserve — the two commands of the quick start:
#   make run    set everything up, serve the default model, predict a sample, write overlay.png
#   make test   set everything up, lint, type-check and run the tests
PYTHON ?= python3
VENV   ?= .venv
OVERLAY ?= overlay.png
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.attnserve-installed

BYO_VENV ?= .venv-byo
BYO_STAMP := $(BYO_VENV)/.attnserve-installed

.PHONY: run test setup byo-setup test-byo lint typecheck system-tools proto clean

# A warning, not a failure, when the disk may not hold a venv (pip then fails with
# "No space left on device" half-way through: CI once did).
define disk_check
	@free=$$(df -Pk . | awk 'NR == 2 {print int($$4 / 1048576)}'); [ "$$free" -ge $(1) ] || \
	  echo "warning: $$free GiB free on this disk; $(2) needs about $(1) GiB" >&2
endef

$(STAMP): pyproject.toml
	$(call disk_check,3,$(VENV))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: 2.13.0 is the CPU build on the build machines' disk
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/attnserve setup
	touch $@

setup: $(STAMP)

# Bring-your-own timm/torchvision models need torch 2.14.1 + torchvision 0.29.1: their own venv
# (5.6 GB, ~2.5 min from the build machines' disk; see docs/byo.md).
$(BYO_STAMP): pyproject.toml
	$(call disk_check,7,$(BYO_VENV))
	$(PYTHON) -m venv $(BYO_VENV)
	$(BYO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BYO_VENV)/bin/python -m pip install --quiet -e '.[byo-test]'
	touch $@

byo-setup: $(BYO_STAMP)

run: $(STAMP)
	$(BIN)/attnserve demo --overlay $(OVERLAY)

test: $(STAMP) lint typecheck system-tools test-byo
	$(BIN)/python -m pytest

# tests/byo in .venv-byo (in .venv they skip: no timm there)
test-byo: $(STAMP) $(BYO_STAMP)
	$(BYO_VENV)/bin/python -m pytest tests/byo

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
	rm -rf $(VENV) $(BYO_VENV) .pytest_cache .mypy_cache .ruff_cache build
