import math
import os
import signal

import pytest
import torch
from torch import nn

from course_lib.train import (History, TrainConfig, Trainer, TrainingDiverged, infinite, moving_average,
                              stop_on_sigterm, warmup_cosine)


def _regression(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def step(i):
        opt.zero_grad()
        loss = ((model(x).squeeze(-1) - y) ** 2).mean()
        loss.backward()
        opt.step()
        return {"loss": loss}
    return model, opt, step


def test_loss_falls_and_history_is_logged():
    torch.manual_seed(0)
    model, opt, step = _regression()
    trainer = Trainer({"model": model}, {"opt": opt}, TrainConfig(max_steps=100, log_every=10, progress=False))
    hist = trainer.fit(step)
    assert trainer.step == 100 and trainer.stopped_by == "max_steps"
    assert [r["step"] for r in hist.records] == [1] + list(range(10, 101, 10))
    assert hist.last("loss") < 0.01 * hist.values("loss")[0]


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    torch.manual_seed(0)
    model_a, opt_a, step_a = _regression()
    Trainer({"model": model_a}, {"opt": opt_a}, TrainConfig(max_steps=60, progress=False)).fit(step_a)

    torch.manual_seed(0)
    model_b, opt_b, step_b = _regression()
    cfg = TrainConfig(max_steps=25, checkpoint_dir=tmp_path, progress=False)
    Trainer({"model": model_b}, {"opt": opt_b}, cfg).fit(step_b)
    assert (tmp_path / "last.pt").is_file()

    model_c, opt_c, step_c = _regression()  # a fresh process: new weights, resumed from disk
    cfg = TrainConfig(max_steps=60, checkpoint_dir=tmp_path, progress=False)
    trainer = Trainer({"model": model_c}, {"opt": opt_c}, cfg)
    assert trainer.step == 25
    trainer.fit(step_c)
    assert trainer.step == 60
    for a, c in zip(model_a.parameters(), model_c.parameters()):
        torch.testing.assert_close(a, c)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]   # no temp files left behind


def test_interrupt_keeps_progress(tmp_path):
    model, opt, step = _regression()

    def interrupted(i):
        if i == 7:
            raise KeyboardInterrupt
        return step(i)
    trainer = Trainer({"model": model}, {"opt": opt}, TrainConfig(max_steps=50, checkpoint_dir=tmp_path, progress=False))
    trainer.fit(interrupted)
    assert trainer.stopped_by == "interrupted"
    assert Trainer({"model": model}, {"opt": opt}, TrainConfig(max_steps=50, checkpoint_dir=tmp_path)).step == 7


def test_sigterm_stops_like_an_interrupt_and_keeps_progress(tmp_path):
    model, opt, step = _regression()

    def killed(i):
        if i == 7:
            os.kill(os.getpid(), signal.SIGTERM)   # what `kill PID` sends to a background run
        return step(i)
    before = signal.getsignal(signal.SIGTERM)
    trainer = Trainer({"model": model}, {"opt": opt}, TrainConfig(max_steps=50, checkpoint_dir=tmp_path, progress=False))
    with stop_on_sigterm():
        trainer.fit(killed)
    assert signal.getsignal(signal.SIGTERM) is before                # the handler is put back
    assert trainer.stopped_by == "interrupted"
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 7


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e9])
def test_divergence_stops_with_advice_and_keeps_last_good_checkpoint(tmp_path, bad):
    model, opt, _ = _regression()
    cfg = TrainConfig(max_steps=10, checkpoint_dir=tmp_path, checkpoint_every_s=0.0, progress=False)
    trainer = Trainer({"model": model}, {"opt": opt}, cfg)
    with pytest.raises(TrainingDiverged, match="step 3: loss = .*Lower the learning rate"):
        trainer.fit(lambda i: {"loss": 1.0 if i < 3 else bad})
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["step"] == 3


def test_time_budget_stops_early():
    model, opt, step = _regression()
    trainer = Trainer({"model": model}, {"opt": opt}, TrainConfig(max_steps=10**9, time_budget_s=0.2, progress=False))
    trainer.fit(step)
    assert trainer.stopped_by == "time_budget" and 0 < trainer.step < 10**9


def test_callback_and_namedtuple_losses():
    from typing import NamedTuple

    class Losses(NamedTuple):
        a: torch.Tensor
        b: float

    seen = []
    model = nn.Linear(1, 1)
    trainer = Trainer({"m": model}, {}, TrainConfig(max_steps=9, log_every=3, progress=False))
    hist = trainer.fit(lambda i: Losses(torch.tensor(float(i)), 2.0), callback=lambda s, t: seen.append(s),
                       callback_every=3)
    assert seen == [3, 6, 9] and hist.values("a") == [0.0, 2.0, 5.0, 8.0] and hist.mean("b") == 2.0


def test_resume_refuses_another_model(tmp_path):
    model, opt, step = _regression()
    Trainer({"model": model}, {"opt": opt}, TrainConfig(max_steps=2, checkpoint_dir=tmp_path, progress=False)).fit(step)
    with pytest.raises(RuntimeError, match="delete the file"):
        Trainer({"generator": model}, {"opt": opt}, TrainConfig(max_steps=2, checkpoint_dir=tmp_path))


def test_infinite_cycles_and_rejects_empty():
    it = infinite([1, 2])
    assert [next(it) for _ in range(5)] == [1, 2, 1, 2, 1]
    with pytest.raises(ValueError, match="empty"):
        next(infinite([]))


def test_history_errors_name_the_keys():
    with pytest.raises(KeyError, match="logged keys"):
        History([{"step": 1, "loss": 1.0}]).last("acc")


def test_moving_average_warms_up_then_decays_as_litema():
    model = nn.Linear(1, 1, bias=False)
    avg = moving_average(model, decay=0.9)
    seen = []
    for w in (1.0, 2.0, 3.0, 4.0):
        model.weight.data.fill_(w)
        avg.update_parameters(model)
        seen.append(float(avg.module.weight.detach()))
    expect = [1.0]                                               # the first update copies the weights
    for n, w in enumerate((2.0, 3.0, 4.0), start=1):
        d = min(0.9, (1 + n) / (10 + n))                         # LitEma's warm-up: 2/11, 3/12, 4/13
        expect.append(d * expect[-1] + (1 - d) * w)
    assert seen == pytest.approx(expect)
    assert float(model.weight.detach()) == 4.0                            # the model itself is untouched
    bn = nn.BatchNorm1d(1)                                       # an integer buffer is copied, not averaged
    avg_bn = moving_average(bn, decay=0.9)
    for count in (3, 7):
        bn.num_batches_tracked.fill_(count)
        avg_bn.update_parameters(bn)
    assert int(avg_bn.module.num_batches_tracked) == 7


def test_warmup_cosine_rises_linearly_then_falls_to_its_floor():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = warmup_cosine(opt, steps=100, warmup=10, floor=0.1)
    rates = []
    for _ in range(120):
        rates.append(opt.param_groups[0]["lr"])
        opt.step(), sched.step()
    assert rates[0] == pytest.approx(2.0 * 0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(0))))       # 1 of 10 warm-up steps
    assert rates[9] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 9 / 100))))
    assert rates[50] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))                                 # half-way down
    assert rates[100] == rates[119] == pytest.approx(2.0 * 0.1)                               # the floor, held
    assert all(a <= b for a, b in zip(rates[:10], rates[1:10])) and all(a >= b for a, b in zip(rates[10:], rates[11:]))
    plain = warmup_cosine(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), steps=4)   # no warm-up, floor 0
    assert plain.get_last_lr()[0] == pytest.approx(1.0)
