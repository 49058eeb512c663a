"""``python -m bench perf --profile GRID``: where a grid's wall time goes, as ``bench run`` spends it.

Why: "seeds are cheap" needs to know what a seed costs. The grid runs exactly as a user runs it
(``python -m bench run`` in a subprocess, fresh run directory and cache, with its report); the CLI
marks its phases (start-up, preflight with the datasets' decoding, the cost estimate, the units,
the driver's record writing, the report) in a JSON file named by ``UAD_BENCH_PROFILE``, and the
records' own ``timings`` split the units' time by kind of work (data, training, embedding, head
fits, scores and maps, metrics). Nothing is timed twice and nothing here changes a result.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ENV = "UAD_BENCH_PROFILE"
#: Record timings -> the profile's columns (a detector cell's ``fit_s`` is its training).
COLUMNS = (("data", ("dataset_s",)), ("training", ("encoder_fit_s",)), ("embedding", ("embed_s",)),
           ("head/detector fit", ("fit_s",)), ("scores+maps", ("predict_s",)), ("metrics", ("metrics_s",)))


class Phases:
    """Wall-clock phases of one ``bench run``, written to ``$UAD_BENCH_PROFILE`` (no-op when unset)."""

    def __init__(self, path: str | None, imported_at: float):
        self.path = path
        self.data = {"imported_at": imported_at, "started_at": time.time(), "phases": {}, "info": {}}
        self._last = self.data["started_at"]

    @classmethod
    def from_env(cls, imported_at: float) -> "Phases":
        return cls(os.environ.get(ENV) or None, imported_at)

    def mark(self, name: str, **info) -> None:
        now = time.time()
        self.data["phases"][name] = now - self._last
        self.data["info"].update(info)
        self._last = now

    def save(self) -> None:
        if self.path:
            self.data["ended_at"] = time.time()
            Path(self.path).write_text(json.dumps(self.data, indent=1))


def unit_kind(record: dict) -> str:
    from bench.run.store import record_unit

    return "{} {}".format(*record_unit(record))


def breakdown(records: list[dict]) -> dict[str, dict[str, float]]:
    """Seconds per unit kind and column, summed over the records (every seed, head and map kind)."""
    table: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for record in records:
        timings = record.get("timings") or {}
        row = table[unit_kind(record)]
        row["cells"] += 1
        for column, keys in COLUMNS:
            row[column] += sum(float(timings.get(k) or 0.0) for k in keys)
    return table


def profile_lines(phases: dict, records: list[dict], wall_s: float, launched_at: float,
                  cpu_s: float | None = None) -> list[str]:
    from bench.cost.estimate import _fmt

    steps, info = phases.get("phases", {}), phases.get("info", {})
    startup = phases["imported_at"] - launched_at + steps.get("setup", 0.0)
    exit_s = launched_at + wall_s - phases.get("ended_at", launched_at + wall_s)
    table = breakdown(records)
    totals = {column: sum(row[column] for row in table.values()) for column, _ in COLUMNS}
    workers = int(info.get("workers") or 1)
    units_wall = steps.get("units", 0.0)
    writing = float(info.get("record_writing_s") or 0.0)
    other = units_wall * workers - sum(totals.values()) - writing
    lines = [f"wall time {_fmt(wall_s)} ({len(records)} records; {workers} unit(s) at once, "
             f"{info.get('threads')} torch thread(s) each; planned {_fmt(float(info.get('planned_s') or 0))}; "
             f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end)",
             *([f"  CPU time (user + system) of the run and its worker processes: {_fmt(cpu_s)} "
                "(on a shared machine the wall times below stretch, this does much less)"] if cpu_s else []),
             f"  start-up (interpreter, imports, grid, executor): {_fmt(startup)}",
             f"  preflight (datasets loaded/decoded, components built): {_fmt(steps.get('preflight', 0.0))}",
             f"  cost estimate: {_fmt(steps.get('estimate', 0.0))}",
             f"  units: {_fmt(units_wall)} wall"
             + (f" ({_fmt(units_wall * workers)} of worker slots: {workers} x wall)" if workers > 1 else "")]
    header = f"    {'unit kind':42s} {'cells':>5s} " + " ".join(f"{c:>17s}" for c, _ in COLUMNS)
    lines.append(header)
    for kind in sorted(table, key=lambda k: -sum(table[k][c] for c, _ in COLUMNS)):
        row = table[kind]
        lines.append(f"    {kind:42s} {int(row['cells']):5d} " + " ".join(f"{_fmt(row[c]):>17s}" for c, _ in COLUMNS))
    lines.append(f"    {'all units':42s} {len(records):5d} " + " ".join(f"{_fmt(totals[c]):>17s}" for c, _ in COLUMNS))
    lines += [f"    not in the records' timings (slots idle once fewer units than workers are left, the adequacy "
              f"guard's untrained reference, cache writes, worker start-up): {_fmt(max(other, 0.0))}",
              f"  record writing (driver): {_fmt(writing)}",
              f"  report: {_fmt(steps.get('report', 0.0))}",
              f"  exit (interpreter shutdown): {_fmt(max(exit_s, 0.0))}"]
    return lines


def main(args) -> int:
    from bench.run.store import ResultStore

    out = Path(args.out) / f"profile_{Path(args.profile).stem}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    phases_file = out / "phases.json"
    command = [sys.executable, "-m", "bench", "run", "--grid", args.profile, "--out", str(out / "run"),
               "--cache", str(out / "cache"), "--reports", str(out / "reports"), "--quiet", "--device", args.device]
    for item in args.grid_set:
        command += ["--set", item]
    if args.workers is not None:
        command += ["--workers", str(args.workers)]
    print("$ " + " ".join(command), flush=True)
    launched = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, env={**os.environ, ENV: str(phases_file)})
    wall = time.time() - launched
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if not phases_file.is_file():
        print(f"error: bench run exited with {result.returncode} before its phases were written", file=sys.stderr)
        return 2
    records = ResultStore(out / "run").records(skip_bad=True)
    print(f"profile of grid '{args.profile}' (exit status {result.returncode}):")
    for line in profile_lines(json.loads(phases_file.read_text()), records, wall, launched, cpu):
        print(line)
    return 0 if result.returncode in (0, 1) else result.returncode
