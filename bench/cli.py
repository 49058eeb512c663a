"""``python -m bench``: run grids, list registries, show dataset cards, build reports, measure speed.

Heavy imports (torch, timm, ...) happen inside the commands, so ``--help`` answers at once.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bench.cli_args import LISTABLE, build_parser

#: Wall-clock time this module was imported: ``bench perf --profile`` counts start-up up to here.
IMPORTED_AT = time.time()

#: What ``show dataset --load`` reports of a loader's config, where the loader records it.
FOUND_KEYS = ("source", "native_sizes", "native_channels", "channels", "masks_found", "unused", "normal_dir",
              "abnormal_dir", "normal_test_dir", "mask_dir", "extensions", "split_file", "groups_csv",
              "group_pattern", "seed", "cache_hit")


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
