"""The command line's arguments: every ``python -m bench`` command and its options, in one parser.

Why apart from :mod:`bench.cli`: what a user may type is one concept, what each command does with it
another; both modules import nothing heavy, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse

#: The registries ``python -m bench list`` can print.
LISTABLE = ("datasets", "encoders", "heads", "detectors", "grids")


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
