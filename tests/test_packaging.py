"""The distribution owns exactly one import name, ``chatbridge``.

The repository keeps ``core/``, ``adapters/``, ``bots/`` and ``emulators/`` at the top; the
built wheel must nest them under ``chatbridge/`` so generic names such as ``core`` never land
in site-packages. The wheel is built with the real setuptools backend from this checkout.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    setuptools_build = pytest.importorskip("setuptools.build_meta")
    out = tmp_path_factory.mktemp("wheel")
    cwd = Path.cwd()
    scratch = ROOT / "build"
    had_scratch = scratch.exists()
    os.chdir(ROOT)  # the build backend reads pyproject.toml from the working directory
    try:
        name = setuptools_build.build_wheel(str(out))
    finally:
        os.chdir(cwd)
        if not had_scratch:  # setuptools' scratch copy would shadow the sources in searches
            shutil.rmtree(scratch, ignore_errors=True)
    return zipfile.ZipFile(out / name)


def _top_levels(names: list[str]) -> set[str]:
    return {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}


def test_wheel_installs_one_top_level_package(wheel: zipfile.ZipFile) -> None:
    assert _top_levels(wheel.namelist()) == {"chatbridge"}


def test_wheel_carries_every_layer_and_its_data(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for module in (
        "chatbridge/__init__.py",
        "chatbridge/core/engine.py",
        "chatbridge/core/py.typed",
        "chatbridge/adapters/telegram/adapter.py",
        "chatbridge/adapters/discord_adapter/adapter.py",
        "chatbridge/bots/cli.py",
        "chatbridge/emulators/loopos.py",
        "chatbridge/emulators/data/sample-phone.jpg",
    ):
        assert module in names, module
    assert not any(n.startswith(("chatbridge/tests/", "tests/")) for n in names)


def test_wheel_entry_point_names_the_namespaced_cli(wheel: zipfile.ZipFile) -> None:
    entry = next(n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    text = wheel.read(entry).decode()
    assert "chatbridge = chatbridge.bots.cli:main" in text


def test_top_level_folders_are_imported_only_through_chatbridge() -> None:
    """No module imports the bare folder names, which would load a second copy of them."""
    offenders = []
    for folder in ("core", "adapters", "bots", "emulators", "tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                stripped = line.strip()
                for bare in ("core", "adapters", "bots", "emulators"):
                    if stripped.startswith((f"from {bare}.", f"import {bare}.", f"from {bare} ")):
                        offenders.append(f"{path.relative_to(ROOT)}:{number}: {stripped}")
    assert offenders == []
