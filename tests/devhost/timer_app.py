"""Timers for the devhost tests; each run appends a JSON line with its
start and end time to ``$SAMPLE_RECORD_DIR/<timer>.jsonl``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import azure.functions as func

app = func.FunctionApp()


def _record(name: str, started: float, timer: func.TimerRequest) -> None:
    path = Path(os.environ["SAMPLE_RECORD_DIR"]) / f"{name}.jsonl"
    line = {"start": started, "end": time.time(), "past_due": timer.past_due}
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")


@app.timer_trigger(arg_name="timer", schedule="%FAST_TICK_SCHEDULE%")
def fast_tick(timer: func.TimerRequest) -> None:
    _record("fast_tick", time.time(), timer)


@app.timer_trigger(arg_name="timer", schedule="*/1 * * * * *", run_on_startup=True)
def slow_tick(timer: func.TimerRequest) -> None:
    """Takes longer than its one-second period, so ticks are missed."""
    started = time.time()
    time.sleep(float(os.environ.get("SLOW_TICK_SECONDS", "1.6")))
    _record("slow_tick", started, timer)


@app.timer_trigger(arg_name="timer", schedule="0 0 0 1 1 *", run_on_startup=True)
def startup_only(timer: func.TimerRequest) -> None:
    """Scheduled once a year: any run during a test is the startup run."""
    _record("startup_only", time.time(), timer)
