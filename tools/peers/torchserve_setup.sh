#!/usr/bin/env bash
# The TorchServe peer of the benchmark suite, in its own environment: .venv-torchserve at the
# repository root (gitignored), never part of attnserve's install or of CI.
#
#   bash tools/peers/torchserve_setup.sh          # from anywhere; idempotent
#   VENV=/elsewhere PYTHON=python3.11 bash tools/peers/torchserve_setup.sh
#
# What it installs: TorchServe and torch-model-archiver 0.12.0 (the last release; the project is
# archived), Captum for /explanations, torch 2.13.0 pinned (the CPU build on the build machines'
# disk: an unpinned torch resolves to a CUDA build and ~15 NVIDIA wheels, gigabytes), and
# attnserve itself without dependencies (editable), so the handler runs the gateway's own
# preprocessing and model code. TorchServe's frontend is Java: a JRE 17+ comes from Debian's
# openjdk-17-jre-headless when none is on PATH.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${VENV:-$ROOT/.venv-torchserve}
PYTHON=${PYTHON:-python3}
TORCH=torch==2.13.0
TORCHSERVE_VERSION=0.12.0
CAPTUM_VERSION=0.9.0

java_major() {
  java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1
}

if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ]; then
  echo "installing a Java runtime (TorchServe's frontend needs 17+) ..."
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless
fi
echo "java $(java_major): $(command -v java)"

started=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install --quiet --upgrade pip
# torch first and pinned, and kept pinned while the rest resolves (a constraint, not a hope);
# pyyaml because TorchServe's worker imports yaml without declaring it
constraints=$(mktemp)
build_log=$(mktemp)
trap 'rm -f "$constraints" "$build_log"' EXIT
echo "$TORCH" >"$constraints"
"${PIP[@]}" install --quiet "$TORCH"
"${PIP[@]}" install --quiet -c "$constraints" \
  "torchserve==$TORCHSERVE_VERSION" "torch-model-archiver==$TORCHSERVE_VERSION" "captum==$CAPTUM_VERSION" \
  "pyyaml>=6,<7" "numpy>=1.26,<3" "pillow>=11.3,<14" "pydantic>=2.7,<3" "pydantic-settings>=2.3,<3" \
  "tqdm>=4.66,<5"
# attnserve's code for the handler, without its serving dependencies (gRPC, Triton client, ...);
# setuptools' build warnings are shown only if the install fails
"${PIP[@]}" install --quiet --no-deps -e "$ROOT" >"$build_log" 2>&1 || { cat "$build_log"; exit 1; }

"$VENV/bin/python" - <<'PY'
import importlib.metadata as m
import torch
import captum.attr  # noqa: F401
import ts.async_service  # noqa: F401  (what TorchServe's worker imports first)
import ts.torch_handler.base_handler  # noqa: F401
from attnserve.server.gateway.preprocess import preprocess_image  # noqa: F401
from attnserve.export.checkpoint import load_checkpoint  # noqa: F401
assert not torch.cuda.is_available() and "+cpu" in torch.__version__, torch.__version__
print("ok:", ", ".join(f"{p} {m.version(p)}" for p in ("torch", "torchserve", "torch-model-archiver", "captum")))
PY
echo "set up $VENV in $(( $(date +%s) - started )) s, $(du -sh "$VENV" | cut -f1) on disk"
