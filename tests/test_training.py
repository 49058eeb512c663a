"""The shared training loop (methods/training.py): batches, schedules, clipping, divergence, history."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from methods.base import MethodError
from methods.detectors.ae import ConvAutoencoder, fit_autoencoder
from methods.training import shuffled_batches, train_loop


def _regression(n: int = 10, seed: int = 0):
    torch.manual_seed(seed)
    x = torch.randn(n, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1
    model = nn.Linear(3, 1)
    return model, x, y


def _loss(model, x, y):
    return lambda index, step: (model(x[index])[:, 0] - y[index]).pow(2).mean()


def test_shuffled_batches_drop_or_keep_the_ragged_tail():
    kept = shuffled_batches(10, 4, torch.Generator().manual_seed(0), drop_last=False)
    dropped = shuffled_batches(10, 4, torch.Generator().manual_seed(0))
    assert [len(b) for b in kept] == [4, 4, 2] and [len(b) for b in dropped] == [4, 4]
    assert sorted(torch.cat(kept).tolist()) == list(range(10))
    assert [len(b) for b in shuffled_batches(3, 8, torch.Generator())] == [3]        # smaller than a batch: one
    torch.testing.assert_close(torch.cat(kept[:2]), torch.cat(dropped))             # one randperm, same order


def test_history_is_the_per_sample_mean_and_every_step():
    model, x, y = _regression()
    history = train_loop(_loss(model, x, y), n=10, batch_size=4, epochs=3, generator=torch.Generator().manual_seed(0),
                         optimizers=[torch.optim.SGD(model.parameters(), lr=0.01)], name="toy", drop_last=False)
    assert len(history.epochs) == 3 and len(history.steps) == 9
    first = history.steps[:3]
    assert history.epochs[0] == pytest.approx((4 * first[0] + 4 * first[1] + 2 * first[2]) / 10)


def test_max_steps_stops_mid_epoch():
    model, x, y = _regression()
    history = train_loop(_loss(model, x, y), n=10, batch_size=4, epochs=10, max_steps=5,
                         generator=torch.Generator(), optimizers=[torch.optim.SGD(model.parameters(), lr=0.01)],
                         name="toy")
    assert len(history.steps) == 5 and len(history.epochs) == 3                     # 2 + 2 + 1 steps


def test_scheduler_per_step_or_per_epoch():
    for interval, expected in [("step", 0.1 * 0.5 ** 6), ("epoch", 0.1 * 0.5 ** 3)]:
        model, x, y = _regression()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
        train_loop(_loss(model, x, y), n=10, batch_size=5, epochs=3, generator=torch.Generator(), optimizers=[opt],
                   name="toy", scheduler=sched, scheduler_interval=interval)
        assert opt.param_groups[0]["lr"] == pytest.approx(expected)


def test_gradient_clipping_bounds_the_update():
    model, x, y = _regression()
    before = [p.detach().clone() for p in model.parameters()]
    train_loop(lambda index, step: 1e6 * _loss(model, x, y)(index, step), n=10, batch_size=10, epochs=1,
               generator=torch.Generator(), optimizers=[torch.optim.SGD(model.parameters(), lr=1.0)], name="toy",
               clip_grad_norm=0.5)
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert moved.norm() == pytest.approx(0.5, rel=1e-4)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e9])
def test_divergence_names_method_epoch_step_and_hint(bad):
    model, x, y = _regression()

    def loss_fn(index, step):
        loss = _loss(model, x, y)(index, step)
        return loss * bad if step == 3 else loss

    with pytest.raises(MethodError, match=r"toy diverged at epoch 1, step 1 \(loss=.*\); lower the lr"):
        train_loop(loss_fn, n=10, batch_size=5, epochs=3, generator=torch.Generator(), max_loss=1e6,
                   optimizers=[torch.optim.SGD(model.parameters(), lr=0.01)], name="toy", hint="lower the lr")


def test_hooks_run_in_order_and_the_generator_is_shared():
    model, x, y = _regression()
    calls = []
    generator = torch.Generator().manual_seed(0)
    train_loop(_loss(model, x, y), n=10, batch_size=5, epochs=2, generator=generator,
               optimizers=[torch.optim.SGD(model.parameters(), lr=0.01)], name="toy",
               before_epoch=lambda e: calls.append(("epoch", e)), after_step=lambda s: calls.append(("step", s)))
    assert calls == [("epoch", 0), ("step", 0), ("step", 1), ("epoch", 1), ("step", 2), ("step", 3)]
    again = torch.Generator().manual_seed(0)
    torch.randperm(10, generator=again), torch.randperm(10, generator=again)
    assert torch.equal(torch.rand(3, generator=generator), torch.rand(3, generator=again))


def test_fit_autoencoder_matches_the_hand_written_loop_bit_for_bit():
    """The loop before it moved into methods/training.py (the refactor must not change a number)."""
    data = torch.rand(20, 1, 16, 16) * 2 - 1

    def reference(model):
        generator = torch.Generator().manual_seed(1)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        history = []
        for _ in range(2):
            order, losses = torch.randperm(len(data), generator=generator), []
            for start in range(0, len(data) - 8 + 1, 8):
                xb = data[order[start:start + 8]]
                loss = (model(xb) - xb).pow(2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
            history.append(float(np.mean(losses)))
        return history

    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(ConvAutoencoder(1, 16, 4, 4, 16))
    expected = reference(models[0])
    got = fit_autoencoder(models[1], data, epochs=2, batch_size=8, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0,
                          generator=torch.Generator().manual_seed(1))
    assert got == expected
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(a, b)
