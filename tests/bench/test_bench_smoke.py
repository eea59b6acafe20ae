"""The benchmarks run end to end at a tiny size and print every figure their
report promises. Speed is not asserted: that is what the full runs are for
(docs/benchmarks.md)."""

from __future__ import annotations

import re

import pytest

from bench import command_path, poll_cycle


@pytest.mark.slow
def test_command_path_reports_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    args = "--n 20 --tenants 2 --batches 1 --batch-size 100 --parallel 2"
    assert command_path.main([*args.split(), "--time-limit", "240"]) == 0
    report = capsys.readouterr().out
    assert re.search(r"raw Azurite upsert_entity: \d+/s", report)
    assert re.search(r"end to end \d+ commands/s = [\d.]+x raw upsert", report)
    assert "storage round trips per command excluding receives" in report
    assert re.search(r"receives: \d+ for 20 commands", report)
    assert re.search(r"\d+ agents/s applied", report)
    assert "## Parallel variant" in report
    assert report.count(": met") + report.count(": NOT met") >= 3


@pytest.mark.slow
def test_poll_cycle_reports_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    args = "--subscriptions 1300 --tenants 2 --small 650 --latency-ms 0"
    args += " --naive-sample 20 --workers 4 --time-limit 240"
    assert poll_cycle.main(args.split()) == 0
    report = capsys.readouterr().out
    # Two tenants of 650: one shard, so one Graph call, each.
    assert report.count("Graph presence calls 2 (minimum 2)") == 3
    assert "## Measured cycle without changes" in report
    assert re.search(r"table transactions: presence \d+", report)
    assert re.search(r"Event Grid: \d+ requests, \d+ events", report)
    assert re.search(r"650 subscriptions: \d+ KiB; 1300: \d+ KiB", report)
    assert "EXTRAPOLATED" in report
    assert "no changes: presence writes 0, publishes 0: met" in report
