#!/bin/bash
# Builds an offline bundle for tools/bench_host/run.sh: everything `attnserve serve` and
# tools/burst.py need on another x86-64 Linux host that has no network, only Python (3.12 by
# default) with numpy, onnxruntime, Pillow and uvloop already installed (a GPU machine's image).
#
#     bash tools/bench_host/bundle.sh [DEST]      # DEST: .devrun (git-excluded) by default
#
# DEST/payload.tar.xz (~42 MB, 2 minutes of xz on 2 cores) holds
#   site/        the gateway's wheels for that Python, unpacked, at this venv's versions
#   stubsite/    the backend environment's numpy (< 2: the stub corrupts tensors under numpy 2)
#   pytriton/tritonserver, nvidia_pytriton.libs   the nvidia-pytriton wheel's Triton 2.51,
#                trimmed to the binary, the Python backend, that Python's stub and the libraries
#                they load (not the wheel's own libpython 3.13: the stub links the host's)
set -euo pipefail
PYVER=${PYVER:-3.12}
VENV=${VENV:-.venv}
DEST=${1:-.devrun}
TAG=cp${PYVER/./}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
version() { "$VENV/bin/python" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1"; }
download() {  # pip's platform tags must match a wheel's exactly: offer the usual manylinux ones
  local tags=() n
  for n in 2_17 2_24 2_27 2_28 2_31 2_34 2_35; do tags+=(--platform "manylinux_${n}_x86_64"); done
  "$VENV/bin/python" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp --platform manylinux2014_x86_64 "${tags[@]}" -d "$WORK/$1" "$2"
}
GATEWAY=(grpcio protobuf pydantic pydantic_core pydantic-settings python-dotenv typing-inspection
  annotated-types tritonclient grpcio-health-checking grpcio-reflection starlette uvicorn
  python-multipart prometheus_client typing_extensions python-rapidjson)
for name in "${GATEWAY[@]}"; do download site "$name==$(version "$name")"; done
triton_setting() { "$VENV/bin/python" -c "from attnserve.settings import TritonSettings as T; print($1)"; }
download stub "$(triton_setting "next(r for r in T().backend_requirements if r.startswith('numpy'))")"
PYTRITON=$(triton_setting "T().pytriton_version")
download triton "nvidia-pytriton==$PYTRITON"

PAYLOAD=$WORK/payload
mkdir -p "$PAYLOAD/site" "$PAYLOAD/stubsite"
for wheel in "$WORK"/site/*.whl; do "$VENV/bin/python" -m zipfile -e "$wheel" "$PAYLOAD/site"; done
"$VENV/bin/python" -m zipfile -e "$WORK"/stub/*.whl "$PAYLOAD/stubsite"
rm -rf "$PAYLOAD"/stubsite/numpy/{tests,*/tests,f2py,distutils}
"$VENV/bin/python" -m zipfile -e "$WORK"/triton/*.whl "$WORK/triton/x"
mv "$WORK/triton/x/nvidia_pytriton.libs" "$PAYLOAD/"
rm -f "$PAYLOAD"/nvidia_pytriton.libs/libpython3*
mkdir -p "$PAYLOAD/pytriton"
mv "$WORK/triton/x/pytriton/tritonserver" "$PAYLOAD/pytriton/"
find "$PAYLOAD/pytriton/tritonserver/python_backend_stubs" -mindepth 1 -maxdepth 1 ! -name "$PYVER" -exec rm -rf {} +
chmod +x "$PAYLOAD/pytriton/tritonserver/bin/tritonserver" "$PAYLOAD/pytriton/tritonserver/python_backend_stubs/$PYVER/triton_python_backend_stub"
ls "$PAYLOAD/site" | grep -q "^grpc$" || { echo "no grpc in the bundle" >&2; exit 1; }
mkdir -p "$DEST"
tar -cf - -C "$PAYLOAD" . | xz -9 -T0 > "$DEST/payload.tar.xz.new"
mv "$DEST/payload.tar.xz.new" "$DEST/payload.tar.xz"
echo "$DEST/payload.tar.xz: $(du -h "$DEST/payload.tar.xz" | cut -f1) for Python $PYVER ($TAG)"
