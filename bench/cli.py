"""``python -m bench``: run grids, list registries, show dataset cards, build reports, measure speed.

Heavy imports (torch, timm, ...) happen inside the commands, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

#: Wall-clock time this module was imported: ``bench perf --profile`` counts start-up up to here.
IMPORTED_AT = time.time()

LISTABLE = ("datasets", "encoders", "heads", "detectors", "grids")
#: What ``show dataset --load`` reports of a loader's config, where the loader records it.
FOUND_KEYS = ("source", "native_sizes", "native_channels", "channels", "masks_found", "unused", "normal_dir",
              "abnormal_dir", "normal_test_dir", "mask_dir", "extensions", "split_file", "groups_csv",
              "group_pattern", "seed", "cache_hit")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark representation spaces x density models for anomaly detection in medical images.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a grid (resumes: finished cells are not recomputed)")
    run.add_argument("--grid", default="quick", help="grid name under bench/grids/ or a TOML path (default: quick)")
    run.add_argument("--data-root", default=None, help="folder with the datasets (default: $UAD_BENCH_DATA or ./data)")
    run.add_argument("--out", default=None, help="run directory (default: runs/<grid name>)")
    run.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when available)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override the grid, e.g. encoder.simclr.epochs=2 or seeds=[0,1,2] (repeatable)")
    run.add_argument("--cache", default=None,
                     help="cache folder for trained encoders, fitted detectors and decoded datasets "
                          "(default: $UAD_BENCH_CACHE or runs/cache)")
    run.add_argument("--reports", default="reports",
                     help="reports go to REPORTS/<run directory name> (default: reports/); a report of another "
                          "run directory there is never overwritten")
    run.add_argument("--check", action="store_true",
                     help="only validate the grid and run the preflight (datasets, weights, pools); no training")
    run.add_argument("--budget", type=float, default=None, metavar="HOURS",
                     help="refuse the grid, before any work, when its planned wall time exceeds HOURS")
    run.add_argument("--measure-budget", type=float, default=None, metavar="SECONDS", help="most seconds the "
                     "cost estimate spends timing units (default 300); units not timed by then are listed")
    run.add_argument("--no-report", action="store_true", help="skip building the report at the end")
    run.add_argument("--claims", dest="claim_files", action="append", default=[], metavar="FILE",
                     help="claims of your own (TOML [[claim]] tables) for the report's verdicts (repeatable); "
                          "--set claims.builtin=false leaves the built-in ones out")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="local: units one after another in this process (default); ray: units as Ray tasks "
                          "on this machine or a cluster (the driver alone writes records)")
    run.add_argument("--workers", default=None, type=lambda v: v if v == "auto" else int(v), metavar="N|auto",
                     help="with the local executor: run up to N units (seeds, encoders) at once in worker processes, "
                          "torch threads per unit = cores / N; auto: one per core (default: the grid's "
                          "[resources] workers, else 1)")
    run.add_argument("--ray-address", default=None, metavar="ADDR",
                     help="with --executor ray: 'auto' or HOST:PORT joins a running cluster "
                          "(default: start a local Ray runtime sized to this machine)")
    run.add_argument("--max-parallel", type=int, default=None, metavar="N",
                     help="with --executor ray: at most N tasks in flight (default: as resources allow)")

    lst = sub.add_parser("list", help="list registered datasets, encoders, heads, detectors or grids")
    lst.add_argument("what", nargs="?", choices=LISTABLE, default=None)

    show = sub.add_parser("show", help="print a dataset card (with --load: load it and print split counts)")
    show.add_argument("what", choices=["dataset"])
    show.add_argument("name")
    show.add_argument("--data-root", default=None)
    show.add_argument("--load", action="store_true", help="load the data and print counts per split")
    show.add_argument("--set", dest="params", action="append", default=[], metavar="KEY=VALUE",
                      help="loader parameters, e.g. image_size=128")

    rep = sub.add_parser("report", help="build tables and figures from a run directory (or several: one report "
                                        "comparing them, cells matched by configuration)")
    rep.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    rep.add_argument("--out", default=None, help="output folder (default: reports/<run name>, "
                                                 "reports/<name>+<name> for several runs)")
    rep.add_argument("--no-builtin", action="store_true", help="leave the built-in claims out of the verdicts")
    rep.add_argument("--fast", action="store_true", help="tables and heatmaps only (no bootstrap, no t-SNE)")
    rep.add_argument("--strict", action="store_true",
                     help="stop at the first error of any report part (default: list it in the README and go on)")
    rep.add_argument("--skip-bad", action="store_true",
                     help="report without unreadable records and list them (default: exit non-zero naming them)")
    rep.add_argument("--claims", dest="claim_files", action="append", default=[], metavar="FILE",
                     help="claims of your own (TOML [[claim]] tables) besides the built-in and the grid's")

    claims = sub.add_parser("claims", help="verdicts of the claims (built-in, the grid's, --claims files) on a run")
    claims.add_argument("run_dir")
    claims.add_argument("--claims", dest="claim_files", action="append", default=[], metavar="FILE",
                        help="a TOML file of [[claim]] tables (repeatable; bench/claims/*.toml are the built-in ones)")
    claims.add_argument("--no-builtin", action="store_true", help="only the grid's and --claims files' claims")
    claims.add_argument("--out", default=None, help="folder for claims.md/.csv/.tex (default: reports/<run name>)")
    claims.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate of the Holm correction")
    claims.add_argument("--resamples", type=int, default=None, metavar="B",
                        help="case-bootstrap resamples for the test variance of non-AUROC metrics (default 2000)")

    pred = sub.add_parser("predict", help="apply one cell of a finished run to a folder of images (scores, maps)")
    pred.add_argument("run_dir")
    pred.add_argument("--cell", required=True, metavar="ID", help="cell id (a file name under RUN_DIR/records/)")
    pred.add_argument("--images", required=True, metavar="DIR", help="folder of image files to score")
    pred.add_argument("--out", required=True, metavar="DIR",
                      help="writes DIR/scores.csv and, for cells that make maps, DIR/maps/*.npy and DIR/overlays/*.png")
    pred.add_argument("--cache", default=None,
                      help="the cache the run used, where its fits are (default: the path its record names)")
    pred.add_argument("--data-root", default=None, help="folder with the datasets (the cell's training data)")
    pred.add_argument("--device", default="auto")

    sel = sub.add_parser("select", help="label-free selection of a configuration, graded with the run's test labels")
    sel.add_argument("run_dir")
    sel.add_argument("--dataset", default=None, metavar="NAME",
                     help="a dataset without labels (your own): print the configuration each criterion recommends "
                          "and which criterion the run's labelled datasets favour")
    sel.add_argument("--out", default=None, help="folder for selection.md/.csv/.tex (default: reports/<run name>)")
    sel.add_argument("--resamples", type=int, default=1000, metavar="B", help="bootstrap resamples of the regret intervals")
    sel.add_argument("--examples", default=None, metavar="DATASET",
                     help="also draw the generator examples figure from DATASET's validation normals (needs torch)")
    sel.add_argument("--data-root", default=None, help="with --examples: folder with the datasets")

    perf = sub.add_parser("perf", help="measure training throughput, the head-reuse cache and peak memory")
    perf.add_argument("--device", default="auto")
    perf.add_argument("--encoders", type=int, default=2, help="E, the number of encoders in the cache benchmark")
    perf.add_argument("--steps", type=int, default=40, help="training steps timed per loop")
    perf.add_argument("--batch-size", type=int, default=64)
    perf.add_argument("--image-size", type=int, default=64)
    perf.add_argument("--out", default="runs/perf")
    perf.add_argument("--skip-grid", action="store_true", help="only (a) and (c)")
    perf.add_argument("--per-encoder", action="store_true",
                      help="(d) every trainable encoder's training and gradient maps, suite vs bare "
                           "(always on with a CUDA device)")
    perf.add_argument("--families", nargs="?", const="families", default=None, metavar="GRID",
                      help="(g) only: training throughput of simclr and every self-supervised family at GRID's "
                           "encoder settings (default grid: families), images/s")
    perf.add_argument("--executor", choices=["local", "ray"], default="local",
                      help="ray: only the quick grid's wall time under Ray / under the local executor")
    perf.add_argument("--set", dest="grid_set", action="append", default=[], metavar="KEY=VALUE",
                      help="with --executor ray or --profile: overrides of the grid")
    perf.add_argument("--profile", default=None, metavar="GRID",
                      help="run GRID as `bench run` does (fresh cache, with its report) and print where the wall "
                           "time goes: start-up, data, training, embedding, head fits, maps, metrics, records, "
                           "report (--set overrides, --workers N)")
    perf.add_argument("--workers", default=None, metavar="N|auto", help="with --profile: passed to bench run")
    perf.add_argument("--estimate", "--plan", dest="estimate", default=None, metavar="GRID",
                      help="estimate GRID's wall time on --gpus N from existing records; trains nothing")
    perf.add_argument("--gpus", type=lambda v: [int(x) for x in v.split(",")], default=[1], metavar="N[,N...]",
                      help="with --estimate: GPU counts, e.g. 1,4,8 (default 1)")
    perf.add_argument("--data-root", default=None, help="with --estimate: where the grid's datasets are (absent "
                                                        "ones are planned from their declared sizes)")
    perf.add_argument("--run", default=None, metavar="RUN_DIR",
                      help="with --estimate: the run directory whose records give the timings (default runs/GRID)")
    for command in (run, lst, show, rep, claims, pred, sel, perf):
        command.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE|FILE.py",
                             help="import a module of your own methods/datasets/metrics first (a module name "
                                  "importable from the current folder or a .py file; repeatable)")
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings a user acts on (a corrupt cache entry, a clamped k) as one line, no source echo."""
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.formatwarning = _one_line_warning
    args = build_parser().parse_args(argv)
    from bench.shadow import shadowed

    clash = shadowed()
    if clash is not None:
        print(f"error: {clash}", file=sys.stderr)
        return 2
    try:
        from bench.plugins import load_entry_points, load_plugins

        load_entry_points()                    # installed packages' uad_bench.plugins entry points
        load_plugins(args.plugins)
        return {"run": cmd_run, "list": cmd_list, "show": cmd_show, "report": cmd_report,
                "perf": cmd_perf, "claims": cmd_claims, "predict": cmd_predict, "select": cmd_select}[args.command](args)
    except KeyboardInterrupt:
        print("interrupted; finished cells are kept, rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for errors a user can act on
        message = one_line_error(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


def one_line_error(exc: BaseException) -> str | None:
    """The one line a user acts on for ``exc`` (a refused grid, a missing dataset, a full disk, ...),
    or None for a bug, whose traceback is worth seeing."""
    from bench.run.executors import ExecutorError
    from bench.run.grid import GridError
    from bench.run.runner import DeviceError
    from bench.run.store import BadRecordError, RunLockedError, describe_os_error
    from bench.analysis.claims import ClaimError
    from bench.plugins import PluginError
    from bench.run.predict import PredictError
    from datasets._shared.registry import UnknownEntryError

    known = (GridError, UnknownEntryError, UsageError, RunLockedError, DeviceError, ExecutorError, BadRecordError,
             ClaimError, PredictError, PluginError)
    try:
        from datasets.base import DatasetError
        from methods.base import MethodError

        known += (DatasetError, MethodError)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, known):
        return " ".join(str(exc).split())
    if isinstance(exc, OSError):     # read-only or missing folders, a file in the way, a full disk
        return describe_os_error(exc)
    return None


class UsageError(ValueError):
    """A command-line value that cannot be used; printed as one line, exit 2."""


def report_dir_for(run_dir: Path, reports: str | Path, *, claim: bool = True) -> Path:
    """``<reports>/<run dir name>``, refusing a folder that holds the report of a *different* run
    directory (checked before the run starts; ``claim`` marks the folder as this run's)."""
    return claim_report_dir(Path(reports) / run_dir.name, run_dir, claim=claim,
                            hint="pass --reports DIR to put this run's report elsewhere")


def claim_report_dir(target: Path, run_dir: Path, *, claim: bool = True, hint: str = "") -> Path:
    """``target`` as the report folder of ``run_dir``: refused when its ``.source`` marker names another
    run directory, or when it is a file; ``claim`` writes the marker (atomically)."""
    from bench.run.store import atomic_write_text, check_folder

    marker = target / ".source"
    source = str(run_dir.resolve())
    check_folder(target, "report folder")
    records = (run_dir / "records").resolve()
    if target.resolve() == records or records in target.resolve().parents:
        raise UsageError(f"{target} is inside the records of {run_dir}; {hint}")
    if marker.is_file():
        owner = marker.read_text(errors="replace").strip()
        if owner != source:
            raise UsageError(f"{target} holds the report of {owner}, not of {source}; {hint}")
    elif target.is_dir() and any(target.iterdir()):
        # a folder of someone's files (no report marker): a report would overwrite its README.md
        raise UsageError(f"{target} is a folder of other files, not a report folder (no .source marker); "
                         f"give an empty or new folder; {hint}")
    if claim:
        atomic_write_text(marker, source + "\n", sync=False)
    return target


def load_grid_file(name_or_path: str, overrides: list[str]):
    """``load_grid`` with an unreadable grid file (not UTF-8, a folder, no permission) as one line."""
    from bench.run.grid import GRID_DIR, GridError, load_grid

    try:
        return load_grid(name_or_path, overrides)
    except UnicodeDecodeError as exc:
        path = Path(name_or_path)
        path = path if path.suffix or path.exists() else GRID_DIR / f"{name_or_path}.toml"
        raise GridError(f"grid file {path} is not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} "
                        f"at offset {exc.start}); save it as UTF-8") from None


def check_run_folders(out: Path, cache: Path | None, reports: str | None) -> None:
    """Before any work: the run directory, the cache and the reports folder can be folders (no file in
    the way, writable), and the run directory is not the cache or inside it."""
    from bench.run.cache import default_cache_dir
    from bench.run.store import ResultStore, check_folder

    ResultStore(out).check_layout()
    cache = Path(cache) if cache is not None else default_cache_dir()
    check_folder(cache, "cache folder")
    if out.resolve() == cache.resolve() or cache.resolve() in out.resolve().parents:
        raise UsageError(f"run directory {out} is the cache folder {cache} or inside it; "
                         "pass --out or --cache to keep them apart")
    if reports is not None:
        check_folder(Path(reports), "reports folder")


def cmd_run(args) -> int:
    from bench.cost.profile import Phases

    phases = Phases.from_env(IMPORTED_AT)        # only when `bench perf --profile` asks for them
    try:
        return _cmd_run(args, phases)
    finally:
        phases.save()


def _cmd_run(args, phases) -> int:
    if not (args.no_report or args.check):
        from bench.analysis.figure_pool import warm_figure_workers

        warm_figure_workers()   # they import on the core this process's imports and preflight leave idle
    from bench.run.executors import make_executor
    from bench.run.plan import Plan
    from bench.run.preflight import cells_line, preflight
    from bench.run.runner import Runner
    from bench.run.validate import validate_grid

    grid = load_grid_file(args.grid, args.overrides)
    validate_grid(grid)
    plan = Plan.of(grid)                       # the one expansion: everything below receives it
    out = Path(args.out) if args.out else Path("runs") / grid.name
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is an existing file; give a directory for the run")
    check_run_folders(out, args.cache, None if args.no_report else args.reports)
    if not args.no_report:
        report_dir_for(out, args.reports, claim=False)      # refuse now, not after hours of training
    if args.workers is not None and args.executor != "local":
        raise UsageError("--workers applies to --executor local; Ray runs as many tasks as its CPUs allow")
    executor = make_executor(args.executor, grid, address=args.ray_address, max_parallel=args.max_parallel,
                             workers=args.workers)
    runner = Runner(plan, out, data_root=args.data_root, device=args.device, cache_dir=args.cache,
                    progress=not args.quiet, executor=executor)
    if hasattr(executor, "context"):            # threads per unit for parallel local workers
        runner.context = executor.context(runner.context, grid.data.get("resources", {}).get("cpus_per_task"))
    workers = getattr(executor, "workers", 1)
    print(f"grid '{grid.name}': {len(plan)} cells -> {out} (device {runner.device}, executor {args.executor}"
          + (f", {workers} units at once, {runner.context.threads} torch threads each" if workers > 1 else "") + ")")
    phases.mark("setup")
    try:
        if not args.check:
            executor.start(plan, runner.context)   # Ray workers import and load data during the preflight
        checked = preflight(plan, runner.context, plan_only=args.check)
        phases.mark("preflight")
        for note in checked.notes:
            print(f"  {note}")
        print(cells_line(plan, checked, runner.pending(checked.fingerprints)[1]))
        for problem in checked.problems:
            print(f"error: {problem}", file=sys.stderr)
        if checked.problems and not args.check:
            print(f"preflight: {len(checked.problems)} problem(s); nothing was run", file=sys.stderr)
            return 2
        from bench.cost.measure import estimate_run        # cost before commitment (issue 15)

        estimate = estimate_run(runner, checked, args.executor,     # --check: planned even with problems
                                slots=getattr(executor, "slots", None), budget_s=args.measure_budget)
        print("\n".join(estimate.lines()))
        phases.mark("estimate", planned_s=estimate.seconds)
        if checked.problems:
            print(f"preflight: {len(checked.problems)} problem(s); nothing was run", file=sys.stderr)
            return 2
        if args.budget is not None and estimate.exceeds(args.budget):
            print(f"error: planned wall time {estimate.seconds / 3600:.2f} h exceeds --budget {args.budget:g} h; "
                  "nothing was run", file=sys.stderr)
            return 2
        if args.check:
            print("preflight: ok")
            return 0
        summary = runner.run(checked)
        phases.mark("units", record_writing_s=runner.write_s, workers=getattr(executor, "workers", 1),
                    threads=runner.context.threads)
    finally:
        executor.close()
    print(summary.line())
    for failure in summary.failures:
        print(f"  {failure}", file=sys.stderr)
    for line in record_notes(out, summary.set_aside):
        print(line)
    if not args.no_report:
        from bench.report import build_report

        try:
            report_dir = build_report(out, report_dir_for(out, args.reports), claim_files=tuple(args.claim_files))
        except OSError as exc:
            print(f"error: {one_line_error(exc)}; the records are complete, build the report elsewhere with "
                  f"`python -m bench report {out} --out DIR`", file=sys.stderr)
            return 2
        print_answer(report_dir)
        print(f"report: {report_dir / 'README.md'}")
        phases.mark("report")
    return 0 if summary.clean else 1


def print_answer(report_dir: Path) -> None:
    """The report's short summary (top cells, testable verdicts, flagged cells) on the terminal."""
    answer = report_dir / "answer.txt"
    text = answer.read_text(encoding="utf-8").rstrip() if answer.is_file() else ""
    if text:
        print(text)


def record_notes(run_dir: Path, moved: list | None = None) -> list[str]:
    """What ``run`` and ``report`` say about records that are not aggregated with the rest: records kept aside
    (by this run, with ``moved``; else all so far) and labels whose seeds hold different configurations."""
    from bench.analysis.rows import mixed_rows
    from bench.report.sensitivity import registered_default
    from bench.run.store import ResultStore

    store = ResultStore(run_dir)
    if moved is not None:
        folders: dict = {}
        for path in moved:
            folders[Path(path).parent] = folders.get(Path(path).parent, 0) + 1
        when = "this run"
    else:
        folders, when = store.set_aside_counts(), "so far"
    lines = [f"{n} {'older ' if folder.name == 'superseded' else ''}record{'s' if n > 1 else ''} set aside {when}, "
             f"kept in {folder}/ (not reported: "
             + ("another configuration or other data of the same cell)" if folder.name == "superseded"
                else "unreadable or unverified)") for folder, n in folders.items()]
    return lines + [f"note: {line}" for line in mixed_rows(store.records(skip_bad=True), registered_default)]


def cmd_list(args) -> int:
    """Each entry with one line of description: the first docstring line of its registered
    factory or class (a grid's ``description``)."""
    from bench.run.grid import available_grids

    sections = [args.what] if args.what else list(LISTABLE)
    for what in sections:
        if what == "grids":
            names = available_grids()
            described = {name: grid_description(name) for name in names}
        elif what == "datasets":
            from datasets import DATASETS, list_datasets

            names = list_datasets()
            described = {e.display: e.summary for e in DATASETS.entries()}
        else:
            from methods import registry

            names = getattr(registry, f"list_{what}")()
            described = {e.display: e.summary for e in getattr(registry, what.upper()).entries()}
        if len(sections) > 1:
            print(f"{what}:")
        indent = "  " if len(sections) > 1 else ""
        width = max((len(n) for n in names), default=0)
        for name in names:
            summary = " ".join((described.get(name) or "").split())
            print(f"{indent}{name.ljust(width)}  {summary}".rstrip())
        if what == "detectors":
            from methods.detectors.anomalib_peers import INSTALL_HINT, available

            if not available():
                print(f"{indent}({INSTALL_HINT})")
    return 0


def grid_description(name: str) -> str:
    """A shipped grid's ``description`` (or its first comment line), for ``bench list grids``."""
    import tomllib

    from bench.run.grid import GRID_DIR

    text = (GRID_DIR / f"{name}.toml").read_text(encoding="utf-8")
    try:
        description = tomllib.loads(text).get("description")
    except tomllib.TOMLDecodeError:
        description = None
    if description:
        return str(description)
    comment = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), "")
    return comment


def cmd_show(args) -> int:
    from bench.run.grid import apply_override
    from datasets import DATASETS, create_dataset

    entry, member = DATASETS.lookup(args.name)
    card = entry.tags.get("card")
    if callable(card):
        card = card(member) if entry.family else card()
    dataset = None
    if args.load:                              # the card of this build: its split sizes are appended
        params: dict = {}
        for item in args.params:
            if "=" not in item:
                raise UsageError(f"--set expects key=value, got {item!r}")
            holder = {}
            apply_override(holder, f"v{item[item.index('='):]}")
            params[item.split("=", 1)[0].strip().removeprefix(f"dataset.{args.name}.")] = holder["v"]
        dataset = create_dataset(args.name, root=args.data_root, **params)
        card = dataset.card
    if card is not None:
        for key, value in card.as_dict().items():
            print(f"{key:12s} {value}")
    else:
        print(f"{args.name}: {entry.summary or 'no card'}")
    if dataset is not None:
        print("counts:")
        for split, counts in dataset.summary().items():
            print(f"  {split:6s} " + ", ".join(f"{k}={v}" for k, v in counts.items()))
        print(f"  shape  {dataset.channels}x{dataset.image_size}x{dataset.image_size} (channels x height x width "
              "as the benchmark holds them)")
        print("found:")              # what the loader read, as it says in its config (datasets/<loader>.py)
        for key in FOUND_KEYS:
            value = dataset.config.get(key)
            if value not in (None, "", [], {}):
                print(f"  {key:16s} {value}")
    return 0


def cmd_report(args) -> int:
    from bench.report import build_report

    run_dirs = [Path(d) for d in args.run_dirs]
    for run_dir in run_dirs:
        records = run_dir / "records"
        if not records.is_dir():
            what = f"its records {records} is a file" if records.exists() else "no records/ folder"
            raise UsageError(f"{run_dir} is not a run directory ({what})")
        if not any(records.glob("*.json")):
            raise UsageError(f"{run_dir} has no records yet (records/ holds no <cell>.json); "
                             f"run `python -m bench run --out {run_dir}` first")
    if len({d.resolve() for d in run_dirs}) < len(run_dirs):
        raise UsageError("the same run directory is given twice")
    run_dir = run_dirs[0]
    target = Path(args.out) if args.out else Path("reports") / "+".join(d.resolve().name for d in run_dirs)
    claim_report_dir(target, run_dir, hint="pass --out DIR to put this run's report elsewhere")
    out = build_report(run_dirs if len(run_dirs) > 1 else run_dir, target, full=not args.fast, strict=args.strict,
                       skip_bad=args.skip_bad, claim_files=tuple(args.claim_files),
                       builtin_claims=not args.no_builtin)
    for run in run_dirs:
        for line in record_notes(run):
            print(line)
    print_answer(out)
    print(f"report: {out / 'README.md'}")
    return 0


def cmd_claims(args) -> int:
    """Print the verdict table and write claims.md/.csv/.tex and the forest plot (issue 15)."""
    from bench.analysis.claims import claims_for_run, evaluate_claims
    from bench.report.verdicts import absent_line, render_text, run_claim_settings, split_absent, write_claims
    from bench.run.store import ResultStore

    run_dir = Path(args.run_dir)
    if not (run_dir / "records").is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no records/ folder)")
    builtin, files = run_claim_settings(run_dir)         # the run's --set claims.builtin=... / claims.files=[...]
    store = ResultStore(run_dir)
    records = store.records(skip_bad=True)
    claims, absent = split_absent(claims_for_run(run_dir, [*files, *args.claim_files],
                                                 builtin and not args.no_builtin), records)
    result = evaluate_claims(records, claims, store.arrays, alpha=args.alpha, n_resamples=args.resamples)
    out = Path(args.out) if args.out else report_dir_for(run_dir, "reports")
    print(render_text(result, absent_line(absent)))
    paths = write_claims(result, out, absent_line(absent))
    print(f"claims: {paths[0]}")
    return 0


def cmd_predict(args) -> int:
    """Scores (and maps) of a folder of images from one cell's cached fit (issue 24 item 8)."""
    from bench.run.predict import predict_cell

    result = predict_cell(args.run_dir, args.cell, args.images, args.out, cache_dir=args.cache,
                          data_root=args.data_root, device=args.device)
    for note in result.notes:
        print(f"  {note}")
    threshold = "no validation threshold" if result.threshold is None else f"validation threshold {result.threshold:.6g}"
    maps = f", {result.n_maps} maps + overlays" if result.n_maps else ""
    print(f"{result.n_images} images scored ({threshold}{maps}): {result.scores_csv}")
    return 0


def cmd_select(args) -> int:
    """Grade the label-free criteria on a run (issue 25); with --dataset, advise on an unlabelled dataset."""
    from bench.selection.grade import select_run
    from bench.selection.render import advice, generator_examples, render_markdown, write_selection

    run_dir = Path(args.run_dir)
    if not (run_dir / "records").is_dir():
        raise UsageError(f"{run_dir} is not a run directory (no records/ folder)")
    table, cells = select_run(run_dir, n_resamples=args.resamples)
    if cells.empty or not cells["has_synth"].any():
        print(f"note: no record of {run_dir} holds synthetic-validation scores (run the grid with selection = true); "
              "only the label-free criteria without them (adequacy normal fit) and the baselines are graded")
    if not cells.empty:
        for (dataset, error), part in cells.dropna(subset=["selection_error"]).groupby(["dataset", "selection_error"]):
            print(f"note: {dataset}: {len(part)} cell(s) have no synthetic scores: {error}")
    if args.dataset:
        print(advice(table, cells, args.dataset))
        return 0
    out = Path(args.out) if args.out else report_dir_for(run_dir, "reports")
    paths = write_selection(table, cells, out)
    if args.examples:
        from datasets import create_dataset

        val = create_dataset(args.examples, root=args.data_root).val
        paths += generator_examples(val, out / "figures" / "selection_generators")
    print(render_markdown(table))
    print(f"selection: {paths[0]}")
    return 0


def cmd_perf(args) -> int:
    if args.profile:
        from bench.cost.profile import main as profile_main

        return profile_main(args)
    from bench.cost.perf import main as perf_main

    return perf_main(args)
