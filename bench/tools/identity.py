"""Bit-identity check of a refactoring: run the shipped grids at tiny settings, compare two runs.

Why: a restructuring of the cell path must not move a single number. ``run OUT`` runs the quick,
dense and seeds grids on the synthetic phantoms only (tiny sizes, one seed, one thread) with the
checkout's code; ``compare A B`` reports every record whose status, metrics or stored arrays differ::

    python -m bench.tools.identity run /tmp/before      # on the old commit
    python -m bench.tools.identity run /tmp/after       # on the new one
    python -m bench.tools.identity compare /tmp/before /tmp/after
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

#: Tiny settings per grid: synthetic only, 32 px, a handful of images and epochs.
TINY = {
    "common": ['datasets=["synthetic"]', "seeds=[0]", "defaults.dataset.image_size=32",
               "dataset.synthetic.n_train=48", "dataset.synthetic.n_val=16", "dataset.synthetic.n_test=32"],
    "quick": ["encoder.simclr.epochs=1", "encoder.moco.epochs=1", "encoder.vae.epochs=1",
              "encoder.simclr.batch_size=16", "encoder.moco.batch_size=16", "encoder.vae.batch_size=16",
              "encoder.moco.queue_size=32", "head.flow.epochs=2", "head.flow.milestones=[1]"],
    "dense": ["encoder.simclr.epochs=1", "encoder.moco.epochs=1", "encoder.vae.epochs=1",
              "encoder.simclr.batch_size=16", "encoder.moco.batch_size=16", "encoder.vae.batch_size=16",
              "encoder.moco.queue_size=32", "head.patch_flow.meta_epochs=1", "head.patch_flow.sub_epochs=1", "head.patch_gmm.max_iter=5"],
    "seeds": ["dataset.synthetic.n_pool=48", "encoder.cradl.epochs=1", "encoder.cradl.batch_size=16",
              "encoder.msacl.epochs=1", "encoder.msacl.batch_size=16", "encoder.msacl.centre_samples=16",
              "head.flow.epochs=2", "head.flow.milestones=[1]",
              "detector.msacl_patch.epochs=1", "detector.msacl_patch.batch_size=16",
              'detector.msacl_patch.encoder={centre_samples = 16}',
              "detector.recontrast.epochs=1", "detector.recontrast.batch_size=16",
              "detector.ddad_asr.epochs=1", "detector.ddad_asr.asr_epochs=1", "detector.ddad_asr.pool_size=16",
              "detector.ddad_asr_uad.epochs=1", "detector.ddad_asr_uad.asr_epochs=1",
              "detector.ddad_asr_uad.pool_size=16",
              "detector.ae16.epochs=1", "detector.ae128.epochs=1"],
}
GRIDS = ("quick", "dense", "seeds")


def run(out: Path, grids=GRIDS) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for grid in grids:
        cmd = [sys.executable, "-m", "bench", "run", "--grid", grid, "--out", str(out / grid),
               "--cache", str(out / "cache"), "--no-report", "--quiet", "--device", "cpu",
               "--set", "resources.cpus_per_task=1"]
        for item in TINY["common"] + TINY[grid]:
            cmd += ["--set", item]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, env=env, check=False)


def _records(run_dir: Path) -> dict[str, Path]:
    return {p.relative_to(run_dir).as_posix(): p for p in sorted(run_dir.glob("*/records/*.json"))}


def compare(a: Path, b: Path) -> int:
    ra, rb = _records(a), _records(b)
    differ, only = [], sorted(set(ra) ^ set(rb))
    for name in sorted(set(ra) & set(rb)):
        ja, jb = json.loads(ra[name].read_text()), json.loads(rb[name].read_text())
        why = []
        for key in ("status", "metrics", "metrics_unavailable", "config_hash", "dataset_fingerprint"):
            if ja.get(key) != jb.get(key):
                why.append(key)
        na, nb = ra[name].with_suffix(".npz"), rb[name].with_suffix(".npz")
        if na.exists() != nb.exists():
            why.append("arrays missing on one side")
        elif na.exists():
            with np.load(na) as xa, np.load(nb) as xb:
                if set(xa.files) != set(xb.files):
                    why.append(f"array names {sorted(set(xa.files) ^ set(xb.files))}")
                why += [f"array {k}" for k in sorted(set(xa.files) & set(xb.files))
                        if not np.array_equal(xa[k], xb[k])]
        if why:
            differ.append((name, why))
    statuses = {}
    for p in rb.values():
        s = json.loads(p.read_text()).get("status")
        statuses[s] = statuses.get(s, 0) + 1
    print(f"{len(set(ra) & set(rb))} records compared ({statuses}), {len(differ)} differ, "
          f"{len(only)} on one side only")
    for name, why in differ:
        print(f"  DIFFER {name}: {', '.join(why)}")
    for name in only:
        print(f"  ONLY ON ONE SIDE {name}")
    return 1 if differ or only or not ra else 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 2 and argv[0] == "run":
        run(Path(argv[1]), tuple(argv[2:]) or GRIDS)
        return 0
    if len(argv) == 3 and argv[0] == "compare":
        return compare(Path(argv[1]), Path(argv[2]))
    print(__doc__)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
