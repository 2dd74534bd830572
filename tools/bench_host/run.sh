#!/bin/bash
# Runs tools/burst.py's matrix on a host with no network, from the bundle bundle.sh built:
# the server (gateway and Triton) on the last 2 cores, the load generator on all the others.
# Run from the repository's root (the checkout as copied there, cbam's model included):
#
#     bash tools/bench_host/run.sh                # the matrix (~6 minutes on 16 cores)
#     MODE=pooled bash tools/bench_host/run.sh    # 30 mixed bursts from 8 processes, then 1
#     MODE=processes bash tools/bench_host/run.sh # render_processes=1 against threads, ABBA
#     MODE=smoke SERVER_CORES=1 bash tools/bench_host/run.sh
#
# BUNDLE (default .devrun) holds payload.tar.xz; OUT (default /tmp/bench_host) gets a JSON file
# a run and nothing empty; PY is the host's Python (numpy, onnxruntime, Pillow, uvloop there).
# The Triton runtime is assembled in /tmp/rt from the bundle (`attnserve setup` would download
# it) and the checkout's package folders are linked as setuptools maps them (no install).
set -u
REPO=$(pwd)
BUNDLE=${BUNDLE:-.devrun}
OUT=${OUT:-/tmp/bench_host}
PY=${PY:-python3}
MODE=${MODE:-matrix}
mkdir -p "$OUT"
log() { echo "== $(date +%T) $*"; }
log "host: $(nproc) cores, kernel $(uname -r), autogroup $(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo n/a)"
$PY -V; $PY -m pip list 2>/dev/null | grep -i -E "^(grpcio|pillow|uvloop|numpy|onnxruntime|protobuf) "
P=/tmp/bench_host_payload; RT=/tmp/rt
if [ ! -d $P/site ]; then
  mkdir -p $P && xz -dc "$BUNDLE/payload.tar.xz" | tar -xf - -C $P || { log "unpacking the bundle failed"; exit 2; }
fi
for d in server export clients; do [ -e attnserve/$d ] || ln -s ../$d attnserve/$d; done
export PYTHONPATH=$REPO:$P/site
TAG=$($PY -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
HOST_SITE=$($PY -c 'import onnxruntime, os; print(os.path.dirname(os.path.dirname(onnxruntime.__file__)))')
if [ ! -f $RT/env.complete ]; then
  rm -rf $RT; $PY -m venv --without-pip $RT/env || exit 2
  SITE=$RT/env/lib/python$TAG/site-packages
  cp -a $P/stubsite/. $SITE/ && cp -a $P/pytriton $P/nvidia_pytriton.libs $SITE/ || exit 2
  echo "$HOST_SITE" > $SITE/zz_host.pth  # the host's onnxruntime, after numpy 1.26
  $RT/env/bin/python -c 'import numpy, onnxruntime; print("stub env: numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__)' || exit 2
  $PY -c "
from attnserve.settings import Settings
from attnserve.server.triton.runtime import _requirements_key
print(_requirements_key(Settings().triton))" > $RT/env.complete || exit 2
fi
export ATTNSERVE_TRITON__RUNTIME_DIR=$RT
$PY -m attnserve setup 2>&1 | tail -1
$PY -c "import tritonclient.grpc, attnserve.server.serve, grpc; print('gateway imports, grpcio', grpc.__version__)" || exit 2
B="$PY tools/burst.py --adaptive --server-cores ${SERVER_CORES:-2} --models cbam --json"
go() {  # name, burst.py's arguments
  local name=$1; shift
  log "$name: $*"
  timeout "${GO_TIMEOUT:-200}" $B "$@" > "$OUT/$name.json" 2> "$OUT/$name.err" || { log "$name failed"; tail -20 "$OUT/$name.err"; }
  $PY - "$OUT/$name.json" <<'PYEOF'
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        s = json.loads(line)
        print({k: s.get(k) for k in ("setting", "capacity", "bursts", "clients", "unloaded_p50_ms", "unloaded_p99_ms",
              "floor_p99_ms", "resource_exhausted_seen", "rejections_counted", "internal", "cheap_p99_ratio",
              "cheap_gateway_p99_ratio", "triton_compute_mean_ms")})
        for kind, figures in s["by_kind"].items():
            if figures["sent"]:
                print(f"  {kind}:", {k: v for k, v in figures.items() if k != "admitted_stages_p99_ms"})
PYEOF
}
case $MODE in
  smoke) go smoke --heavy-share 0 --bursts 3 --timeout-s 0.9 ;;
  processes)  # heavy calls in a worker process against render threads, ABBA
    GO_TIMEOUT=400 go processes_8p --heavy-share 0.25 --clients 8 --bursts 10 --timeout-s 0.9 --against render_processes=1 --rounds 2
    GO_TIMEOUT=400 go processes_1c --heavy-share 0.25 --bursts 10 --timeout-s 0.9 --against render_processes=1 --rounds 2 ;;
  pooled)
    go pooled_mixed_8p --heavy-share 0.25 --clients 8 --bursts 30 --timeout-s 0.9
    go pooled_mixed_1c --heavy-share 0.25 --bursts 30 --timeout-s 0.9 ;;
  matrix)
    go mixed_8p --heavy-share 0.25 --clients 8 --bursts 15 --timeout-s 0.9
    go mixed_1c --heavy-share 0.25 --bursts 15 --timeout-s 0.9
    go cheap_1c --heavy-share 0 --bursts 60 --timeout-s 0.9
    go cheap_8p --heavy-share 0 --clients 8 --bursts 60 --timeout-s 0.9
    GO_TIMEOUT=280 go nice19_8p --heavy-share 0.25 --clients 8 --bursts 6 --timeout-s 0.9 --against render_nice=19 --rounds 2 ;;
  *) echo "MODE: smoke, pooled, processes or matrix" >&2; exit 2 ;;
esac
find "$OUT" -empty -delete; ls -la "$OUT"; log done
