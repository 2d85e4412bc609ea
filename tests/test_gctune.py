"""bots.gctune: the collector settings a started bridge process runs with (a fresh interpreter
per case: the settings are process-wide)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import gc, sys
from chatbridge.bots.gctune import GEN0_THRESHOLD, tune_gc
default = gc.get_threshold()[0]
tune_gc(many_connections=sys.argv[1] == "many")
print(default, gc.get_threshold()[0], GEN0_THRESHOLD, gc.get_freeze_count() > 0)
"""


def settings(kind: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, kind],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    return out.stdout.split()


def test_startup_objects_are_frozen_and_young_collections_spaced_out_for_connections() -> None:
    default, now, wanted, frozen = settings("many")
    assert int(now) == int(wanted) > int(default)
    assert frozen == "True"


def test_a_bot_without_open_connections_keeps_the_default_young_generation() -> None:
    default, now, _, frozen = settings("few")
    assert now == default
    assert frozen == "True"
