"""Benchmarks of the command path and the poll cycle against Azurite and the
local simulators (``python -m bench.command_path``, ``python -m bench.poll_cycle``).
Figures and targets are recorded in ``docs/benchmarks.md``."""
