"""The label-free adequacy guard (bench.analysis.adequacy): short and chance-level trainings fail,
converged ones pass, collapse and no-better-than-untrained representations fail; records carry it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.analysis.adequacy import (
    STILL_FALLING,
    assess,
    assess_detector,
    assess_encoder,
    loss_checks,
    normal_fit_ratio,
    representation_checks,
)

pytestmark = pytest.mark.usefixtures("one_thread")   # small convs: no OpenMP oversubscription

CONVERGED = [3.0 * math.exp(-e / 4) + 1.0 for e in range(30)]      # 30 epochs, time constant 4: flat at the end


def test_converged_history_passes_and_a_linear_one_is_still_falling():
    reasons, measures = loss_checks(CONVERGED)
    assert reasons == [] and measures["loss_tail_fraction"] < STILL_FALLING
    linear = list(np.linspace(10.0, 5.0, 30))                          # the tail drops 10 % of the total
    reasons, measures = loss_checks(linear)
    assert measures["loss_tail_fraction"] == pytest.approx(3 / 29, rel=1e-6)   # window of 4 points: 3 of 29 steps
    assert len(reasons) == 1 and "still falling" in reasons[0]


def test_two_epochs_and_rising_losses_fail():
    assert "too short" in loss_checks([900.0, 400.0])[0][0]
    assert "never decreased" in loss_checks([5.0, 5.1, 5.2, 5.3])[0][0]
    assert "no loss history" in loss_checks([])[0][0]


def test_infonce_at_chance_fails_and_progress_is_measured():
    chance, floor = math.log(255), math.log1p(254 * math.exp(-2.0))     # NT-Xent, batch 128, temperature 0.5
    near = [5.52, 5.40, 5.33, 5.29, 5.27, 5.26, 5.26, 5.26]                # the SimCLR: 5.26 after 8 epochs
    reasons, measures = loss_checks(near, chance=chance, floor=floor)
    assert measures["loss_chance_progress"] == pytest.approx((chance - 5.26) / (chance - floor))
    assert any("barely below chance" in r for r in reasons)
    trained = [5.5, 4.9, 4.5, 4.3, 4.2, 4.15, 4.13, 4.12, 4.12, 4.12]
    assert loss_checks(trained, chance=chance, floor=floor)[0] == []


def test_a_real_two_epoch_vae_fails_and_a_longer_one_passes():
    """Real short trainings on tiny phantoms (32 px, 64 images): 2 epochs is no verdict on anything."""
    from datasets import create_dataset
    from methods.registry import create_encoder

    data = create_dataset("synthetic", image_size=32, n_train=64, n_val=16, n_test=16, n_pool=0)
    vae = {"image_size": 32, "batch_size": 16, "latent_dim": 16, "width": 8}
    short = create_encoder("vae", epochs=2, **vae).fit(data.train, seed=0)
    verdict = assess_encoder(short, short.history_, n_train=64)
    assert verdict["judged"] and not verdict["passed"] and "too short" in verdict["reasons"][0]
    longer = create_encoder("vae", epochs=30, **vae).fit(data.train, seed=0)
    verdict = assess_encoder(longer, longer.history_, n_train=64)
    assert verdict["passed"], verdict["reasons"]


def test_encoders_declare_their_chance_loss():
    from methods.registry import create_encoder

    simclr = create_encoder("simclr", image_size=32, batch_size=128)
    assert simclr.chance_loss(128) == pytest.approx(math.log(255))
    assert simclr.loss_floor(128) == pytest.approx(math.log(1 + 254 * math.exp(-1 / 0.5)))
    moco = create_encoder("moco", image_size=32, queue_size=512)
    assert moco.chance_loss(128) == pytest.approx(math.log(513))
    assert create_encoder("vae", image_size=32).chance_loss(128) is None
    # the guard uses the batch training used: min(batch_size, number of training normals)
    verdict = assess_encoder(simclr, [5.0, 4.0, 3.9, 3.9], n_train=40)
    assert verdict["measures"]["loss_chance"] == pytest.approx(math.log(79))


def test_collapse_and_no_better_than_untrained():
    rng = np.random.default_rng(0)
    spread = rng.normal(size=(200, 16))
    collapsed = np.outer(rng.normal(size=60), rng.normal(size=16)) + 1e-6 * rng.normal(size=(60, 16))
    reasons, measures = representation_checks(spread, collapsed)
    assert measures["effective_rank"] < 2 and any("collapsed" in r for r in reasons)
    # validation normals among the training normals vs scattered away from them
    centres = rng.normal(size=(10, 16)) * 3
    train = centres[rng.integers(0, 10, 200)] + 0.1 * rng.normal(size=(200, 16))
    val_close = centres[rng.integers(0, 10, 40)] + 0.1 * rng.normal(size=(40, 16))
    val_far = rng.normal(size=(40, 16)) * 3
    assert normal_fit_ratio(train, val_close) < normal_fit_ratio(train, val_far)
    reasons, _ = representation_checks(train, val_far, untrained_train=train, untrained_val=val_close)
    assert any("no better than untrained" in r for r in reasons)
    assert representation_checks(train, val_close, untrained_train=train, untrained_val=val_far)[0] == []


def test_frozen_models_and_detectors():
    class Frozen:
        trainable = False

    assert assess_encoder(Frozen(), None) == {"passed": True, "judged": False, "trained": False, "reasons": [],
                                              "measures": {}}

    class DDAD:                                     # a detector with several named losses
        history_ = {"NDM0": CONVERGED, "ASR asr_dual": [0.3, 0.2]}

    verdict = assess_detector(DDAD())
    assert not verdict["passed"] and verdict["reasons"][0].startswith("ASR asr_dual: only 2")

    class PaDiM:
        pass

    assert assess_detector(PaDiM())["judged"] is False
    assert assess(histories={"loss": CONVERGED})["passed"]


def test_records_carry_adequacy_and_tables_mark_inadequate_cells(tmp_path):
    from bench.report import build_report
    from bench.run.grid import load_grid
    from bench.run.plan import Plan
    from bench.run.runner import Runner
    from bench.run.store import ResultStore

    grid = load_grid("quick", ['datasets=["synthetic"]', "seeds=[0]", "defaults.dataset.image_size=32",
                               "dataset.synthetic.n_train=48", "dataset.synthetic.n_val=16",
                               "dataset.synthetic.n_test=24", "dataset.synthetic.n_pool=0", 'encoders=["vae"]',
                               "encoder.vae.epochs=2", "encoder.vae.batch_size=16", 'heads=["gaussian"]',
                               'localization=["gradient"]'])
    Runner(Plan.of(grid), tmp_path / "run", cache_dir=tmp_path / "cache", progress=False).run()
    (record,) = ResultStore(tmp_path / "run").records()
    assert record["adequacy"]["passed"] is False and "too short" in record["adequacy"]["reasons"][0]
    assert "untrained_effective_rank" in record["adequacy"]["measures"]
    out = build_report(tmp_path / "run", tmp_path / "report", full=False)
    table = (out / "tables" / "synthetic" / "all_methods.md").read_text()
    assert "§" in table and "not adequately trained" in table
