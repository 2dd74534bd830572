"""The installed layout: one `attnserve` namespace, complete, with up-to-date generated code."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed() -> None:
    listed = set(SETUPTOOLS["packages"])
    found = set()
    for namespace, folder in SETUPTOOLS["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([namespace, *relative.parts]))
    assert found <= listed, f"add to pyproject's packages: {sorted(found - listed)}"


@pytest.mark.slow
def test_the_wheel_installs_only_the_attnserve_namespace(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("attnserve-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/", 1)[0] for n in names} == {
        "attnserve",
        f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info",
    }
    for module in (
        "attnserve/export/models/cbam.py",
        "attnserve/server/app.py",
        "attnserve/transform/model_input.py",
        "attnserve/clients/grpc.py",
        "attnserve/server/triton/backends/onnxruntime/model.py",
        "attnserve/v1/attnserve_pb2.py",
    ):
        assert module in names


def test_generated_grpc_code_matches_the_proto(tmp_path: Path) -> None:
    from grpc_tools import protoc

    proto = ROOT / "proto"
    args = [
        "protoc",
        f"-I{proto}",
        f"--python_out={tmp_path}",
        f"--pyi_out={tmp_path}",
        f"--grpc_python_out={tmp_path}",
        str(proto / "attnserve" / "v1" / "attnserve.proto"),
    ]
    assert protoc.main(args) == 0
    for generated in sorted((tmp_path / "attnserve" / "v1").iterdir()):
        committed = ROOT / "attnserve" / "v1" / generated.name
        assert committed.read_text() == generated.read_text(), f"{committed} is stale: run `make proto`"
