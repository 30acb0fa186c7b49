"""The collector settings every service runs under (`settle_heap`), checked in a fresh interpreter
so this test process keeps its own."""

import subprocess
import sys

PROBE = """
import gc
from shared.service import GC_THRESHOLDS, settle_heap
built_at_start_up = [object()]
settle_heap()
made_later = [object()]
tracked = gc.get_objects()
print(gc.get_threshold() == GC_THRESHOLDS, gc.get_freeze_count() > 10000,
      any(o is built_at_start_up for o in tracked), any(o is made_later for o in tracked))
"""


def test_what_start_up_built_is_out_of_the_collectors_sight_and_collections_come_less_often():
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    thresholds_set, many_frozen, start_up_seen, later_seen = done.stdout.split()
    assert thresholds_set == "True"
    assert many_frozen == "True"
    assert start_up_seen == "False"  # frozen: no collection walks it again
    assert later_seen == "True"  # what batches make is still collected


def test_the_youngest_generation_waits_longer_than_pythons_default():
    from shared.service import GC_THRESHOLDS

    assert GC_THRESHOLDS[0] > 700
