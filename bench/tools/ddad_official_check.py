"""DDAD-ASR side by side: the official code (caiyu6666/DDAD-ASR) and the suite's ``ddad_asr`` on one data set.

Why: a user saw the suite's intra/inter discrepancy AUROCs 3-6 points above the official code's on
brain MRI. This tool runs both on the *same* images, at the *same* (small, CPU-sized) settings, with
the same seeds, and prints AUROC of Rec, intra, inter and R_dual for each (issue 16, item 7).

The official code is never part of the project: fetch it yourself and pass its folder::

    git clone https://github.com/caiyu6666/DDAD-ASR /tmp/ddad_official   # or any snapshot of it
    python -m bench.tools.ddad_official_check --official /tmp/ddad_official --work /tmp/ddad_check \
        --seeds 0 1 --epochs 100 --batch-size 16 --asr-epochs 5

The official code also needs ``pyyaml pandas tensorboardX matplotlib joblib`` (``--deps DIR`` adds a
``pip install --target DIR`` folder to its ``PYTHONPATH``).

What it does:

1. Writes ``<work>/home/Med-AD/BrainTumor/{images/*.png, data.json}`` from BUSI
   (``--busi``, default ``/work/shared/data/busi.npz``) at 64 px: the layout the official
   ``anomaly_data.py`` and the suite's ``medianomaly`` loader both read. The unlabeled lists hold
   exactly ``pool * (1 - rate)`` normals and ``pool * rate`` lesions, so both sides train the UDM on
   the same images (official: first N/M entries; suite: a seeded draw of all of them).
2. Runs the official ``main.py`` unmodified through a small launcher (written into ``<work>``)
   whose only patches are: CUDA calls become CPU no-ops, ``torch.load`` maps to the CPU, seeds
   (the official code sets none; each of its processes gets ``seed * 100 + run``, so the K ensemble
   members still differ), one torch thread, and ``sklearn.metrics.roc_auc_score`` logged at full
   precision (the official prints 3 decimals). ``HOME`` points at ``<work>/home`` (it reads ``~/Med-AD``).
3. Runs the suite's detector on the loader's splits (``val_fraction=0``: the published test set).
   ``--suite-amp bf16`` trains the suite's AEs and ASR-Net under CPU bf16 autocast, an
   approximation of the CUDA bf16 autocast the suite uses on a GPU (the official code runs fp32).
4. Before the runs, checks the AE and its training step deterministically
   (:func:`training_step_check`: the official ``AE`` imported from ``--official``, same initial
   weights and batches on both sides).
5. Scores the official run's own six AEs with the suite's prediction path (state dicts mapped by
   position): equal AUROCs mean the two scoring paths agree.
6. Prints one table row per (side, seed) and, for the official ASR-Net, the last-epoch and the
   best-epoch (test-set selected) AUROC. Results also go to ``<work>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

LAUNCHER = '''"""Launch the official DDAD-ASR main.py on the CPU (patches listed in ddad_official_check.py)."""
import os, random, runpy, sys
import numpy as np
import torch
import sklearn.metrics

torch.set_num_threads(1)
torch.cuda.set_device = lambda *a, **k: None
torch.Tensor.cuda = lambda self, *a, **k: self
torch.nn.Module.cuda = lambda self, *a, **k: self
_load = torch.load
torch.load = lambda f, *a, **k: _load(f, map_location="cpu", **{x: y for x, y in k.items() if x != "map_location"})
seed = int(os.environ["DDAD_SEED"])
random.seed(seed); np.random.seed(seed); torch.manual_seed(seed)
_auc = sklearn.metrics.roc_auc_score
def _logged(*a, **k):
    value = _auc(*a, **k)
    with open(os.environ["DDAD_AUC_LOG"], "a") as fh:
        fh.write(os.environ["DDAD_TAG"] + " " + repr(float(value)) + "\\n")
    return value
sklearn.metrics.roc_auc_score = _logged
official = os.environ["DDAD_OFFICIAL"]
sys.path.insert(0, official)
sys.argv = [os.path.join(official, "main.py")] + sys.argv[1:]
runpy.run_path(os.path.join(official, "main.py"), run_name="__main__")
'''

CONFIG = """Exp:
  out_dir: "{out_dir}"
  gpu: 0
Model:
  network: "AE"
  mp: 1
  ls: 16
  mem_dim: Null
  shrink_thres: Null
Data:
  dataset: "brain"
  img_size: 64
  extra_data: {pool}
  ar: {rate}
Solver:
  bs: {batch_size}
  lr: 5.0e-4
  weight_decay: 0
  num_epoch: {epochs}
RefineSolver:
  bs: 8
  lr: 1.0e-4
  weight_decay: 1.0e-4
  num_epoch: {asr_epochs}
  grad_clip: Null
"""


def write_medad(busi: Path, folder: Path, *, n_train: int, pool: int, rate: float, n_test_abnormal: int) -> dict:
    """BUSI at 64 px as ``folder/{images, data.json}`` (seeded split, rng 0); returns the split sizes."""
    from PIL import Image

    data = np.load(busi)
    images, labels, names = data["images"], data["labels"], data["names"]
    keep = np.array([str(n) != "malignant (145).png" for n in names])   # pixel-identical to benign (433)
    rng = np.random.default_rng(0)
    normal = rng.permutation(np.flatnonzero((labels == 0) & keep))
    lesion = rng.permutation(np.flatnonzero((labels == 1) & keep))
    n_abnormal = int(pool * rate)                # the official loader's int(extra_data * ar)
    n_normal = pool - n_abnormal
    if n_train + n_normal >= len(normal):
        raise SystemExit(f"BUSI has {len(normal)} normals: too few for {n_train} training + {n_normal} pool normals")
    (folder / "images").mkdir(parents=True, exist_ok=True)

    def name(i: int) -> str:
        return f"busi_{i:03d}.png"

    used = np.concatenate([normal, lesion[:n_abnormal + n_test_abnormal]])
    for i in used:
        path = folder / "images" / name(i)
        if not path.exists():
            Image.fromarray(images[i]).resize((64, 64), Image.BILINEAR).save(path)
    split = {"train": {"0": [name(i) for i in normal[:n_train]],
                       "unlabeled": {"0": [name(i) for i in normal[n_train:n_train + n_normal]],
                                     "1": [name(i) for i in lesion[:n_abnormal]]}},
             "test": {"0": [name(i) for i in normal[n_train + n_normal:]],
                      "1": [name(i) for i in lesion[n_abnormal:n_abnormal + n_test_abnormal]]}}
    (folder / "data.json").write_text(json.dumps(split, indent=1))
    return {"train_normal": n_train, "pool_normal": n_normal, "pool_abnormal": n_abnormal,
            "test_normal": len(split["test"]["0"]), "test_abnormal": len(split["test"]["1"])}


def run_official(args, seed: int) -> dict:
    """The official pipeline for one seed: 3x mode a, 3x mode b, eval, r (ASR-Net); AUROCs at full precision."""
    work = args.work / f"official_s{seed}"
    work.mkdir(parents=True, exist_ok=True)
    for old in ("a", "b"):                      # the official code appends models 0.pth, 1.pth, ...
        for f in (work / "out" / old).glob("*.pth") if (work / "out" / old).exists() else []:
            f.unlink()
    launcher = args.work / "launch_official.py"
    launcher.write_text(LAUNCHER)
    cfg = work / "cfg.yaml"
    cfg.write_text(CONFIG.format(out_dir=work / "out", pool=args.pool, rate=args.rate, batch_size=args.batch_size,
                                 epochs=args.epochs, asr_epochs=args.asr_epochs))
    log = work / "auc.log"
    log.write_text("")
    env = dict(os.environ, HOME=str(args.work / "home"), DDAD_OFFICIAL=str(args.official), DDAD_AUC_LOG=str(log),
               OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [args.deps, os.environ.get("PYTHONPATH")])))
    steps = [("a", 0), ("a", 1), ("a", 2), ("b", 3), ("b", 4), ("b", 5), ("eval", 6)]
    if args.asr_epochs:
        steps.append(("r", 7))
    started = time.perf_counter()
    for mode, run in steps:
        env.update(DDAD_SEED=str(seed * 100 + run), DDAD_TAG=f"{mode}{run}")
        with open(work / f"{mode}{run}.log", "w") as out:
            done = subprocess.run([sys.executable, str(launcher), "--config", str(cfg), "--mode", mode],
                                  cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
        if done.returncode:
            raise SystemExit(f"official --mode {mode} failed: see {work / f'{mode}{run}.log'}")
    logged: dict[str, list[float]] = {}
    for line in log.read_text().splitlines():
        tag, value = line.split()
        logged.setdefault(tag, []).append(float(value))
    rec, intra, inter = logged["eval6"]            # test.evaluate: rec, intra, inter in this order
    row = {"side": "official", "seed": seed, "rec": rec, "intra": intra, "inter": inter,
           "suite_scoring_of_these_models": score_official_models(args, work / "out"),
           "ndm_single_rec_last": [logged[f"b{r}"][-1] for r in (3, 4, 5)], "seconds": time.perf_counter() - started}
    if args.asr_epochs:
        per_epoch = logged["r7"]
        row.update(asr_dual=per_epoch[-1], asr_dual_best=max(per_epoch), asr_dual_epochs=per_epoch)
    return row


def training_step_check(official: Path, epochs: int = 5, batch_size: int = 16) -> dict:
    """The official ``models/autoencoder.py::AE`` against :class:`ConvAutoencoder`, deterministically.

    The official AE is imported from ``official`` (never copied); its initial weights are loaded
    into ours by position; both train on the same random batches, the official side with the body
    of its ``trainer.py::AE_trainer`` (``out = model(x); loss = ((out - x) ** 2).mean()``, Adam 5e-4,
    betas (0.5, 0.999)), ours with :func:`fit_autoencoder`. Returns the largest output and weight
    differences (0.0 = bit-identical) and both loss curves.
    """
    import importlib.util

    import torch

    from methods.detectors.ae import ConvAutoencoder, fit_autoencoder
    from methods.training import shuffled_batches

    spec = importlib.util.spec_from_file_location("official_autoencoder", official / "models" / "autoencoder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    theirs = module.AE(latent_size=16, multiplier=1, unc=False, img_size=64)
    ours = ConvAutoencoder(1, 64, 16, 16, 2048)
    ours.load_state_dict(dict(zip(ours.state_dict().keys(), (v.clone() for v in theirs.state_dict().values()))))
    probe = torch.rand(8, 1, 64, 64) * 2 - 1
    data = torch.rand(70, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        theirs.eval(), ours.eval()
        before = (theirs(probe) - ours(probe)).abs().max().item()
    ours_loss = fit_autoencoder(ours, data, epochs=epochs, batch_size=batch_size, lr=5e-4, betas=(0.5, 0.999),
                                weight_decay=0.0, generator=torch.Generator().manual_seed(1), device="cpu")
    opt = torch.optim.Adam(theirs.parameters(), lr=5e-4, betas=(0.5, 0.999), weight_decay=0)
    generator, theirs_loss = torch.Generator().manual_seed(1), []
    for _ in range(epochs):
        theirs.train()
        losses = []
        for index in shuffled_batches(len(data), batch_size, generator):
            x = data[index]
            loss = ((theirs(x) - x) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        theirs_loss.append(sum(losses) / len(losses))
    theirs.eval(), ours.eval()
    with torch.no_grad():
        after = (theirs(probe) - ours(probe)).abs().max().item()
    weights = max((a - b).abs().max().item() for a, b in zip(theirs.state_dict().values(), ours.state_dict().values())
                  if a.is_floating_point())
    return {"output_diff_at_init": before, "output_diff_after": after, "weight_diff_after": weights,
            "loss_official": theirs_loss, "loss_suite": ours_loss}


def _load_data(args):
    from datasets.medianomaly import medianomaly

    return medianomaly("braintumor", root=args.work / "home" / "Med-AD", image_size=64, with_pool=True,
                       val_fraction=0.0, cache_dir=args.work / "cache")


def score_official_models(args, out_dir: Path) -> dict:
    """The suite's Rec/intra/inter on the official run's own six AEs (``out/a`` = UDM, ``out/b`` = NDM).

    Equal to the official ``test.evaluate`` AUROCs when the two scoring paths agree. The official
    ``AE`` and :class:`ConvAutoencoder` register the same tensors in the same order, so the state
    dicts map by position.
    """
    import torch
    from torch import nn

    from bench.metrics.image import image_auroc
    from methods.detectors.ae import ConvAutoencoder
    from methods.detectors.ddad_asr import DDADASR

    def load(module: str) -> nn.ModuleList:
        models = nn.ModuleList()
        for path in sorted((out_dir / module).glob("*.pth"), key=lambda f: int(f.stem)):
            model = ConvAutoencoder(1, 64, 16, 16, 2048)
            state = torch.load(path, map_location="cpu")
            model.load_state_dict(dict(zip(model.state_dict().keys(), state.values())))
            models.append(model.eval())
        return models

    data = _load_data(args)
    det = DDADASR(score="rec")
    det.ndm_, det.udm_, det.refiners_ = load("b"), load("a"), {}
    got = {}
    for score in ("rec", "intra", "inter"):
        det.score = score
        got[score] = image_auroc(det.predict(data.test.images, with_maps=False).scores, data.test.labels)
    return got


def run_suite(args, seed: int, amp: str) -> dict:
    """The suite's ddad_asr on the medianomaly loader's view of the same folder."""
    import torch

    from bench.metrics.image import image_auroc
    from methods.detectors._pool import unlabeled_pool
    from methods.detectors.ddad_asr import DDADASR

    torch.set_num_threads(1)
    if amp == "bf16":
        import methods.precision

        methods.precision.autocast = lambda device: torch.autocast("cpu", dtype=torch.bfloat16)
    started = time.perf_counter()
    data = _load_data(args)
    pool = unlabeled_pool(data, anomaly_rate=args.rate, size=args.pool, seed=seed)
    det = DDADASR(epochs=args.epochs, batch_size=args.batch_size, asr_epochs=max(args.asr_epochs, 1), score="rec",
                  anomaly_rate=args.rate, pool_size=args.pool)
    det.fit(data.train, seed=seed, device="cpu", unlabeled=pool)
    row = {"side": "suite" + ("" if amp == "fp32" else f" ({amp} autocast)"), "seed": seed}
    scores = ["rec", "intra", "inter"] + (["asr_dual"] if args.asr_epochs else [])
    for score in scores:
        det.score = score
        det.complete_fit(data.train, seed=seed, device="cpu")
        row[score] = image_auroc(det.predict(data.test.images, with_maps=False).scores, data.test.labels)
    row["seconds"] = time.perf_counter() - started
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", type=Path, required=True,
                        help="folder of the official code (fetch github.com/caiyu6666/DDAD-ASR there)")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder outside the project")
    parser.add_argument("--busi", type=Path,           # shared/ beside the checkout, as the tests look for it
                        default=Path(__file__).resolve().parents[3] / "shared" / "data" / "busi.npz")
    parser.add_argument("--deps", default="", help="extra PYTHONPATH for the official code's dependencies")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--asr-epochs", type=int, default=5, help="0 skips the ASR-Net")
    parser.add_argument("--pool", type=int, default=50)
    parser.add_argument("--rate", type=float, default=0.6)
    parser.add_argument("--n-train", type=int, default=70)
    parser.add_argument("--n-test-abnormal", type=int, default=150)
    parser.add_argument("--sides", nargs="+", default=["official", "suite"],
                        choices=["official", "suite", "suite-bf16"])
    args = parser.parse_args(argv)
    if not (args.official / "main.py").is_file() or not (args.official / "anomaly_data.py").is_file():
        print(f"{args.official}: no official DDAD-ASR code; fetch https://github.com/caiyu6666/DDAD-ASR there",
              file=sys.stderr)
        return 2
    args.work = args.work.resolve()
    args.official = args.official.resolve()
    check = training_step_check(args.official)
    print("AE + training step, official vs suite, same initial weights and batches: max |output diff| "
          f"{check['output_diff_at_init']:.3g} at init, {check['output_diff_after']:.3g} after 5 epochs; "
          f"max |weight diff| {check['weight_diff_after']:.3g}")
    sizes = write_medad(args.busi, args.work / "home" / "Med-AD" / "BrainTumor", n_train=args.n_train, pool=args.pool,
                        rate=args.rate, n_test_abnormal=args.n_test_abnormal)
    print(f"data: BUSI 64 px in the Med-AD layout, {sizes}")
    out = args.work / "results.json"
    rows = json.loads(out.read_text()) if out.exists() else []
    for seed in args.seeds:
        for side in args.sides:
            row = (run_official(args, seed) if side == "official"
                   else run_suite(args, seed, "bf16" if side == "suite-bf16" else "fp32"))
            row["settings"] = {k: getattr(args, k) for k in ("epochs", "batch_size", "asr_epochs", "pool", "rate")}
            rows.append(row)
            out.write_text(json.dumps(rows, indent=1))
            print(" | ".join([f"{row['side']:<24}", f"seed {seed}"]
                             + [f"{k} {row[k]:.4f}" for k in ("rec", "intra", "inter", "asr_dual", "asr_dual_best")
                                if k in row] + [f"{row['seconds']:.0f} s"]), flush=True)
            if "suite_scoring_of_these_models" in row:
                print("  the suite's scoring of these official models: " + " | ".join(
                    f"{k} {v:.4f}" for k, v in row["suite_scoring_of_these_models"].items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
