"""Server-Timing books the process's garbage-collection pauses to the gateway, never to the phase they interrupted."""

from __future__ import annotations

import gc
import time

from gateway.handling import collector
from gateway.handling.timing import ServerTiming


def durations(timing: ServerTiming) -> dict[str, float]:
    _, value = timing.header()
    return {name: float(dur) for name, _, dur in (part.partition(";dur=") for part in value.decode().split(", "))}


def test_a_collection_pause_during_a_phase_is_the_gateways() -> None:
    timing = ServerTiming()
    mark = timing.start()
    collector.PAUSES("start", {"generation": 2})
    time.sleep(0.05)  # a 50 ms collection pass, as the collector reports it
    collector.PAUSES("stop", {"generation": 2})
    upstream = timing.stop("upstream", mark)
    found = durations(timing)
    assert upstream < 0.02 and found["upstream"] < 20
    assert found["gateway"] >= 50 and found["total"] >= 50


def test_a_phase_without_pauses_keeps_its_whole_time() -> None:
    timing = ServerTiming()
    mark = timing.start()
    time.sleep(0.03)
    assert timing.stop("upstream", mark) >= 0.03
    assert durations(timing)["upstream"] >= 30


def test_real_collections_are_counted_once_installed() -> None:
    collector.count_pauses()
    collector.count_pauses()
    assert gc.callbacks.count(collector.PAUSES) == 1
    before = collector.PAUSES.total
    gc.collect()
    assert collector.PAUSES.total > before


def test_settle_freezes_what_start_up_made_and_collects_young_objects_less_often() -> None:
    threshold = gc.get_threshold()
    try:
        collector.settle()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == collector.YOUNG_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
