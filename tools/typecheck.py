"""Runs mypy over the package as it is installed: `export/` as `attnserve.export`, and so on.

mypy resolves modules from folders, and the repository maps its top-level folders under one
namespace (pyproject's `package-dir`). This builds that namespace from symlinks in
build/typecheck/ and checks it there, so every import is resolved and checked.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    package_dir: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    tree = ROOT / "build" / "typecheck"
    shutil.rmtree(tree, ignore_errors=True)
    package = tree / "attnserve"
    package.mkdir(parents=True)
    for entry in (ROOT / package_dir["attnserve"]).iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in package_dir.items():
        if name != "attnserve":
            (package / name.split(".", 1)[1]).symlink_to(ROOT / folder)
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "attnserve",
    ]
    return subprocess.run(command, cwd=tree, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
