"""The training skeleton itself (engine/loop.py), on a toy method and on the real trainers."""

from __future__ import annotations

import math
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from napari_temseg.engine import loop
from napari_temseg.engine.data import PairSource
from napari_temseg.engine.events import DenoisePreview, TrainEvent, drain
from napari_temseg.engine.loop import (
    Best,
    LoopConfig,
    Method,
    StepResult,
    TrainingLoop,
    Validation,
    WarmupCosine,
)
from napari_temseg.engine.train import TrainConfig, TrainingDiverged, iter_train
from napari_temseg.models import UNet


class Line(Method):
    """Fit y = 2x + 1 with a 1-in 1-out linear layer; noise from torch's generator too."""

    def __init__(self, seed: int = 0, bad_steps: set[int] = frozenset(), scores=None) -> None:
        torch.manual_seed(seed)
        self.model = nn.Linear(1, 1)
        self.peak_lr = 0.1
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.peak_lr)
        self.rng = np.random.default_rng(seed)
        self.bad_steps, self.scores = bad_steps, list(scores or [])
        self.lrs: list[float] = []
        self.previews = 0

    def optimizers(self):
        return [self.opt]

    def train_step(self, step: int) -> StepResult:
        self.lrs.append(self.opt.param_groups[0]["lr"])
        if step in self.bad_steps:
            return StepResult(False)
        x = torch.from_numpy(self.rng.normal(size=(8, 1)).astype(np.float32))
        y = 2 * x + 1 + 0.01 * torch.randn(8, 1)
        loss = ((self.model(x) - y) ** 2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return StepResult(True, float(loss.detach()))

    def validate(self) -> Validation:
        with torch.no_grad():
            x = torch.linspace(-1, 1, 5)[:, None]
            loss = float(((self.model(x) - (2 * x + 1)) ** 2).mean())
        score = self.scores.pop(0) if self.scores else -loss
        return Validation(loss, score)

    def diverged(self, bad: int, step: int) -> Exception:
        return TrainingDiverged(f"{bad} bad steps at {step}")

    def on_improved(self, step: int, v: Validation) -> None:
        self.best_weights = {k: t.clone() for k, t in self.model.state_dict().items()}

    def preview(self, ev: TrainEvent) -> DenoisePreview | None:
        if ev.kind != "val":
            return None
        self.previews += 1
        return DenoisePreview(np.zeros((2, 2)), np.ones((2, 2)))

    def extra_state(self):
        return {"rng": self.rng.bit_generator.state}

    def load_extra_state(self, state):
        self.rng.bit_generator.state = state["rng"]


def run(method: Method, cancel_at: int | None = None, **cfg):
    cancel = threading.Event()
    settings = {"steps": 20, "batch_size": 8, "val_every": 5, **cfg}
    schedule = WarmupCosine(3, settings["steps"], 0.05, settings.get("max_seconds"))
    events: list[TrainEvent] = []

    def watch(ev: TrainEvent) -> None:
        events.append(ev)
        if cancel_at is not None and ev.kind == "step" and ev.step == cancel_at:
            cancel.set()

    out = drain(TrainingLoop(method, LoopConfig(**settings), schedule, cancel=cancel).run(), watch)
    return out, events


def test_resume_continues_exactly_where_the_state_was_written(tmp_path):
    state = tmp_path / "run.state"
    whole, whole_events = run(Line())
    first, _ = run(Line(), cancel_at=7, checkpoint_every=5, state_path=str(state))
    assert first.stopped and first.step == 7  # the state is written where it stopped
    again = Line(seed=99)  # other weights and data: everything must come from the state
    rest, rest_events = run(again, resume=str(state))
    assert rest.first_step == 0 and rest.step == 20 and not rest.stopped
    losses = [e.loss for e in whole_events if e.kind == "step" and e.step > 7]
    assert [e.loss for e in rest_events if e.kind == "step"] == losses
    assert [e.lr for e in rest_events if e.kind == "step"] == [
        e.lr for e in whole_events if e.kind == "step" and e.step > 7
    ]
    assert (rest.best.step, rest.best.loss) == (whole.best.step, whole.best.loss)
    whole_model = Line()
    run(whole_model)
    assert torch.equal(again.model.weight, whole_model.model.weight)


def test_checkpoint_every_n_steps_writes_the_latest_state(tmp_path, monkeypatch):
    state = tmp_path / "sub" / "run.state"
    saved: list[int] = []
    original = TrainingLoop.save_state

    def spy(self, path):
        saved.append(self.step)
        return original(self, path)

    monkeypatch.setattr(TrainingLoop, "save_state", spy)
    run(Line(), steps=10, checkpoint_every=4, state_path=str(state))
    assert saved == [4, 8, 10]  # every 4 steps, and where the run ended
    assert state.exists() and not state.with_name("run.state.tmp").exists()
    assert torch.load(state, weights_only=True)["step"] == 10
    with pytest.raises(ValueError, match="state_path"):
        LoopConfig(steps=5, batch_size=1, val_every=1, checkpoint_every=2)


def test_cancel_stops_between_steps_validates_and_keeps_the_best():
    method = Line(scores=[0.9, 0.1])  # the step-5 validation is the best; step 7's is worse
    out, events = run(method, cancel_at=7)
    assert out.stopped and out.steps_done == 7
    assert [e.step for e in events if e.kind == "val"] == [5, 7]  # validated on stop
    assert out.best.step == 5 and out.best.score == 0.9
    assert all(torch.equal(p, out.best.state[k]) for k, p in method.model.state_dict().items())


def test_keep_best_by_score_ties_go_to_the_lower_loss():
    best = Best(score=0.5, loss=1.0)
    assert best.beaten_by(Validation(loss=2.0, score=0.6))
    assert not best.beaten_by(Validation(loss=0.1, score=0.4))
    assert best.beaten_by(Validation(loss=0.9, score=0.5))
    assert not best.beaten_by(Validation(loss=math.nan, score=math.nan))
    out, events = run(Line(scores=[0.2, 0.7, 0.3, 0.69]))
    assert out.best.step == 10 and [e.improved for e in events if e.kind == "val"] == [
        True,
        True,
        False,
        False,
    ]


class Recording(Line):
    """:class:`Line`, remembering the weights each validation saw."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.seen: list[dict[str, torch.Tensor]] = []

    def validate(self) -> Validation:
        self.seen.append({k: t.clone() for k, t in self.model.state_dict().items()})
        return super().validate()


def test_late_weight_average_is_the_kept_model_and_is_what_was_validated():
    # scores that fall: keep-best would hold on to step 5; the average ignores them
    plain = Line(scores=[0.9, 0.5, 0.4, 0.3])
    kept, _ = run(plain, val_every=5)
    assert kept.best.step == 5
    method = Recording(scores=[0.9, 0.5, 0.4, 0.3])
    out, events = run(method, val_every=5, average_from=0.5)
    vals = [e for e in events if e.kind == "val"]
    assert [e.step for e in vals] == [5, 10, 15, 20] and all(e.improved for e in vals[1:])
    # the weights of steps 10, 15 and 20, as a run without averaging validates them (the
    # run is deterministic, and folding the average does not disturb the training)
    twin = Recording()
    run(twin, val_every=5)
    snaps = twin.seen[1:]
    mean = {k: sum(s[k] for s in snaps) / 3 for k in snaps[0]}
    assert out.best.step == 20 and out.best.score == 0.3  # the last validation: the mean's
    for k, t in method.model.state_dict().items():
        assert torch.allclose(t, mean[k], atol=1e-6)  # the model ends with the mean ...
        assert torch.allclose(method.seen[-1][k], mean[k], atol=1e-6)  # ... validated
        assert not torch.allclose(mean[k], snaps[-1][k])  # and it is not the last step's
    with pytest.raises(ValueError, match="average_from"):
        LoopConfig(steps=5, batch_size=1, val_every=1, average_from=1.5)


def test_a_resumed_run_keeps_its_weight_average(tmp_path):
    state = tmp_path / "run.state"
    whole = Line()
    out, _ = run(whole, average_from=0.5)
    first = Line()
    run(first, cancel_at=13, average_from=0.5, checkpoint_every=5, state_path=str(state))
    again = Line(seed=99)
    rest, _ = run(again, resume=str(state), average_from=0.5)
    for k, t in whole.model.state_dict().items():
        assert torch.allclose(again.model.state_dict()[k], t, atol=1e-6)
    assert rest.best.step == out.best.step == 20


def test_nan_guard_skips_bad_steps_and_gives_up_after_too_many():
    out, events = run(Line(bad_steps={2, 3, 11}))
    assert out.skipped == 3 and out.step == 20
    assert events[-1].skipped_steps == 3 and all(math.isfinite(e.loss) for e in events[1:])
    method = Line(bad_steps=set(range(6, 20)))
    with pytest.raises(TrainingDiverged, match="4 bad steps"):
        run(method, max_bad_steps=3)
    # the best weights (validated at step 5) are back in the model
    state = method.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in method.best_weights.items())


def test_early_stopping_after_patience():
    out, events = run(Line(scores=[0.5, 0.4, 0.3, 0.2]), val_every=2, patience=2)
    assert out.early_stopped and out.step == 6
    assert [e.step for e in events if e.kind == "val"] == [2, 4, 6]


def test_time_budget_stops_the_run_and_the_rate_follows_it(monkeypatch):
    clock = SimpleNamespace(t=0.0)

    def tick() -> float:
        clock.t += 0.02
        return clock.t

    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=tick))
    method = Line()
    out, events = run(method, steps=10_000, val_every=10_000, max_seconds=3.0)
    assert out.timed_out and not out.stopped and 1 < out.step < 100
    assert events[-1].kind == "val" and events[-1].step == out.step
    assert method.lrs[-1] < 0.2 * method.peak_lr  # decayed by the budget, not the steps
    assert all(0 <= e.eta_s <= 3.0 for e in events if e.kind == "step")


def test_warmup_cosine_schedule():
    s = WarmupCosine(warmup=4, steps=104, floor=0.1)
    assert [s.lr(i, 0, 1.0) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert s.lr(4, 0, 1.0) == 1.0 and s.lr(104, 0, 2.0) == pytest.approx(0.2)
    assert s.lr(54, 0, 1.0) == pytest.approx(0.55)
    timed = WarmupCosine(warmup=4, steps=104, floor=0.1, max_seconds=10)
    assert timed.lr(5, 10.0, 1.0) == pytest.approx(0.1)  # the budget is spent: the floor


def test_previews_come_from_the_method_at_their_interval():
    method = Line()
    _, events = run(method, preview_every_s=0.0)
    kinds = [e.kind for e in events]
    assert kinds.count("preview") == kinds.count("val") == 4
    assert all(kinds[i - 1] == "val" for i, k in enumerate(kinds) if k == "preview")
    assert isinstance(events[kinds.index("preview")].preview, DenoisePreview)
    _, none = run(Line(), preview_every_s=None)
    assert "preview" not in [e.kind for e in none]
    _, rare = run(Line(), preview_every_s=3600.0)
    assert [e.kind for e in rare].count("preview") == 2  # the first, and the last step's


def test_event_fraction_and_run_step():
    ev = TrainEvent("step", step=30, steps=60, first_step=20)
    assert ev.run_step == 10 and ev.fraction == pytest.approx(0.25)
    timed = TrainEvent("step", step=21, steps=60, first_step=20, elapsed_s=3.0, eta_s=1.0)
    assert timed.fraction == pytest.approx(0.75)


# ---------------------------------------------------------------- the real trainers


def _toy_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = rng.random((48, 48)).astype(np.float32)
    return (y + 0.3 * rng.standard_normal(y.shape)).astype(np.float32), y


@pytest.mark.parametrize("method", ["train", "pix2pix"])
def test_denoiser_training_resumes_exactly(method, tmp_path):
    from napari_temseg.engine.pix2pix import Pix2PixConfig, iter_pix2pix

    torch.set_num_threads(1)
    make, trainer = (
        (TrainConfig, iter_train) if method == "train" else (Pix2PixConfig, iter_pix2pix)
    )
    common = dict(steps=8, batch_size=2, val_every=4, val_size=4, device="cpu", prefetch=0)
    if method == "train":
        common["warmup"] = 2

    def go(cfg, cancel_at=None):
        torch.manual_seed(0)
        model = UNet(base=4, depth=2)
        cancel = threading.Event()
        losses = []

        def watch(ev):
            if ev.kind == "step":
                losses.append((ev.step, ev.loss, ev.g_loss, ev.d_loss))
                if ev.step == cancel_at:
                    cancel.set()

        gen = trainer(model, PairSource(_toy_pair, patch=32), cfg, cancel=cancel)
        return drain(gen, watch), losses, model

    whole, whole_losses, whole_model = go(make(**common))
    state = str(tmp_path / "state.pt")
    part, _, _ = go(make(**common, checkpoint_every=4, state_path=state), cancel_at=4)
    assert part.stopped and part.steps_done == 4
    other = r"^state.pt was written by a run with other settings \(lr: \S+ there, 0\.0005 now\)"
    with pytest.raises(loop.ResumeRefused, match=other):  # not its learning rate
        go(make(**{**common, "lr": 5e-4}, resume=state))
    rest, rest_losses, rest_model = go(make(**common, resume=state))
    assert rest_losses == whole_losses[4:]
    assert rest.best_val_loss == whole.best_val_loss and rest.best_step == whole.best_step
    for a, b in zip(rest_model.parameters(), whole_model.parameters(), strict=True):
        assert torch.equal(a, b)
