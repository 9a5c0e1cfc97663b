"""Stage processes freeze their start-up heap and collect young objects less often
(:func:`pipeline.loop.tune_garbage_collector`), in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.loop import YOUNG_COLLECTION_THRESHOLD

pytestmark = pytest.mark.unit

PROBE = """
import gc
from pipeline.loop import tune_garbage_collector
before = gc.get_threshold()
tune_garbage_collector()
print(before[1:] == gc.get_threshold()[1:], gc.get_threshold()[0], gc.get_freeze_count() > 1000)
"""


def test_the_start_up_heap_is_frozen_and_young_collections_are_rarer() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], check=True, capture_output=True, text=True
    ).stdout.split()

    assert out == ["True", str(YOUNG_COLLECTION_THRESHOLD), "True"]
