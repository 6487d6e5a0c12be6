"""Trainer reliability: exact resume, corrupt checkpoints, non-finite guard, safe loading."""

import json
import pickle
from pathlib import Path

import pytest
import torch

from genzoo import models
from genzoo.models import DataSpec
from genzoo.models.gan import GAN
from genzoo.models.trainer import (
    Callback,
    Checkpoints,
    JsonlLogger,
    NonFiniteLossError,
    NonFiniteStateError,
    TrainConfig,
    fit,
)

SPEC = DataSpec(1, 8, 8, 17, 3)


def data(n=48):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 17, (n, 1, 8, 8), generator=g).float() / 16, torch.randint(
        0, 3, (n,), generator=g
    )


def cfg(**kw):
    base = dict(steps=8, batch_size=16, checkpoint_every=4, log_every=2, warmup_steps=2, ema_decay=0.9)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("family", ["vae", "gan", "realnvp", "ddpm"])
def test_stop_and_resume_equals_straight_run(family, tiny, tmp_path):
    """N steps, stop, resume N more == 2N straight: model, optimizers, schedulers, EMA and
    every RNG are restored (reliability case 5)."""
    x, y = data()

    def run(ckpt, stop_at=None):
        torch.manual_seed(0)
        m = models.build(family, SPEC, tiny[family])
        return fit(
            m,
            x,
            y,
            cfg(eval_every=2),
            checkpoint_dir=ckpt,
            progress=False,
            stop_at=stop_at,
            val_fn=lambda mm: -float(sum(p.double().sum() for p in mm.parameters())),
        )

    straight, _ = run(tmp_path / "a")
    run(tmp_path / "b", stop_at=4)
    resumed, result = run(tmp_path / "b")
    assert result.resumed_from == 4
    a, b = straight.state_dict(), resumed.state_dict()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst == 0.0, f"max |dtheta| = {worst}"


def test_a_resumed_run_logs_the_same_figures_as_a_straight_one(tmp_path, tiny):
    """A checkpoint between two log lines dropped the figures since the last one: the first line
    after a resume averaged fewer steps (the weights were the same, the curve was not)."""
    x, y = data()

    class Rows(Callback):
        def __init__(self):
            self.rows = {}

        def on_log(self, step, logs):
            self.rows[step] = logs

    def run(ckpt, stop_at=None):
        torch.manual_seed(0)
        rows = Rows()
        fit(models.build("vae", SPEC, tiny["vae"]), x, y, cfg(steps=12, log_every=4, checkpoint_every=6),
            checkpoint_dir=ckpt, progress=False, stop_at=stop_at, callbacks=[rows])  # fmt: skip
        return rows.rows

    straight = run(tmp_path / "a")
    run(tmp_path / "b", stop_at=6)
    resumed = run(tmp_path / "b")
    assert resumed[8] == straight[8] and resumed[12] == straight[12]


def test_a_kill_while_old_checkpoints_are_removed_keeps_the_new_one_listed(tmp_path, tiny, monkeypatch):
    """The old checkpoint was deleted before the index named the new one: a kill between the two
    (keep_checkpoints 1) left an index naming only a deleted file, and the run restarted at 0."""
    from genzoo.models.trainer import Checkpoints

    ckpts = Checkpoints(tmp_path, keep=1)
    ckpts.save(4, {"step": 4})
    unlink = Path.unlink

    def killed(self, missing_ok=False):
        if self.name == "step-00000004.pt":
            raise KeyboardInterrupt
        return unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", killed)
    with pytest.raises(KeyboardInterrupt):
        ckpts.save(8, {"step": 8})
    monkeypatch.undo()
    assert Checkpoints(tmp_path, keep=1).load_latest()["step"] == 8
    Checkpoints(tmp_path, keep=1).save(12, {"step": 12})  # the file the kill left unlisted goes too
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["step-00000012.pt"]


def test_a_resumed_training_counts_the_time_before_its_checkpoint(tmp_path, tiny):
    """A model restored whole from its last checkpoint (a run killed after it) said "8 steps in
    0.0 s": the checkpoint carries the training time so far, and the resumed run adds its own."""
    x, y = data()
    fit(models.build("vae", SPEC, tiny["vae"]), x, y, cfg(), checkpoint_dir=tmp_path, progress=False)
    before = Checkpoints(tmp_path).load_latest()["seconds"]
    assert before > 0
    m = models.build("vae", SPEC, tiny["vae"])
    _, again = fit(m, x, y, cfg(), checkpoint_dir=tmp_path, progress=False)
    assert again.resumed_from == 8 and again.steps == 8
    assert again.seconds >= before


def test_progress_into_a_pipe_is_a_line_every_tenth_of_the_steps(tiny, caplog, capsys, monkeypatch):
    """`dvc repro` and `genzoo train > log` read the progress from a pipe or a file: a log line
    every tenth of the steps, where tqdm wrote a carriage return per refresh; a terminal keeps
    the bar."""
    import logging
    import re
    import sys

    x, y = data()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    with caplog.at_level(logging.INFO, logger="genzoo.trainer"):
        fit(models.build("vae", SPEC, tiny["vae"]), x, y, cfg(steps=20), progress=True)
    said = [r.getMessage() for r in caplog.records if r.name == "genzoo.trainer"]
    assert [m.split(",")[0] for m in said] == [f"vae: step {s}/20" for s in range(2, 21, 2)]
    assert "neg_elbo" in said[-1] and "\r" not in capsys.readouterr().err
    # each line's pace since the line before, and the time left at it (the last: none left)
    pace = r", [\d.]+ steps/s"
    assert all(re.search(pace + r", ETA \d+:\d\d$", m) for m in said[:-1]), said
    assert re.search(pace + "$", said[-1]), said[-1]
    # logged every 5 steps, a line every 2: each line's figures are its own steps' (a line between
    # two logs showed the earlier log's figures under its own step, or none before the first)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="genzoo.trainer"):
        fit(models.build("vae", SPEC, tiny["vae"]), x, y, cfg(steps=20, log_every=5), progress=True)
    said = [r.getMessage() for r in caplog.records if r.name == "genzoo.trainer"]
    figures = [re.sub(pace + r"(, ETA .*)?$", "", m).partition(", ")[2] for m in said]
    assert len(figures) == 10 and all(figures) and len(set(figures)) == 10, said
    caplog.clear()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    fit(models.build("vae", SPEC, tiny["vae"]), x, y, cfg(steps=20), progress=True)
    assert not [r for r in caplog.records if r.name == "genzoo.trainer"]
    assert "\r" in capsys.readouterr().err  # the bar


def test_a_model_rebuilt_from_its_final_checkpoint_keeps_its_final_figures(tmp_path, tiny):
    """A training resumed from its last step's checkpoint (its outputs lost, or the same params
    again after other ones) trains no step, and its result's figures (metrics.json's ``final``)
    were empty: the checkpoint keeps the latest logged figures."""
    x, y = data()
    torch.manual_seed(0)
    _, first = fit(
        models.build("vae", SPEC, tiny["vae"]), x, y, cfg(), checkpoint_dir=tmp_path, progress=False
    )
    torch.manual_seed(0)
    _, again = fit(
        models.build("vae", SPEC, tiny["vae"]), x, y, cfg(), checkpoint_dir=tmp_path, progress=False
    )
    assert again.resumed_from == 8 and again.steps == 8
    assert first.last and again.last == first.last


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path, tiny, caplog):
    x, y = data()
    m = models.build("vae", SPEC, tiny["vae"])
    fit(m, x, y, cfg(), checkpoint_dir=tmp_path, progress=False)
    ck = Checkpoints(tmp_path)
    newest = tmp_path / "step-00000008.pt"
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped bit-pattern
    newest.write_bytes(bytes(raw))
    state = ck.load_latest()
    assert state["step"] == 4
    assert "step-00000008.pt: sha256 mismatch" in caplog.text
    newest.write_bytes(bytes(raw[: len(raw) // 3]))  # truncated
    assert ck.load_latest()["step"] == 4


@pytest.mark.filterwarnings("error:Detected pickle protocol")  # torch's note stays off the console
def test_pickle_payload_in_checkpoint_is_refused_and_the_previous_one_used(tmp_path, tiny, caplog):
    class Payload:
        def __reduce__(self):
            return (exec, ("open('%s', 'w').write('pwned')" % (tmp_path / "owned"),))

    x, y = data()
    fit(models.build("vae", SPEC, tiny["vae"]), x, y, cfg(), checkpoint_dir=tmp_path, progress=False)
    path = tmp_path / "step-00000008.pt"  # the newest, swapped for a payload with its sha256 indexed
    path.write_bytes(pickle.dumps({"step": 8, "x": Payload()}))
    from genzoo.models.base import sha256_file

    index = json.loads((tmp_path / "index.json").read_text())
    index[-1]["sha256"] = sha256_file(path)
    (tmp_path / "index.json").write_text(json.dumps(index))
    assert Checkpoints(tmp_path).load_latest()["step"] == 4
    assert "step-00000008.pt: refused, it holds more than tensors" in caplog.text
    assert "weights_only" not in caplog.text  # torch's advice to load it unsafely is not passed on
    (tmp_path / "index.json").write_text(json.dumps(index[-1:]))  # the payload alone: start afresh
    assert Checkpoints(tmp_path).load_latest() is None
    assert not (tmp_path / "owned").exists()


def test_an_error_loading_a_good_checkpoint_is_raised_not_taken_for_a_bad_file(tmp_path, tiny, monkeypatch):
    """Only a refused payload is skipped: a GPU short of memory while loading (a RuntimeError)
    must not send training back to step 0 with the checkpoints it would then overwrite."""
    x, y = data()
    fit(models.build("vae", SPEC, tiny["vae"]), x, y, cfg(), checkpoint_dir=tmp_path, progress=False)

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    monkeypatch.setattr(torch, "load", oom)
    with pytest.raises(torch.OutOfMemoryError):
        Checkpoints(tmp_path).load_latest()


class Exploding(models.GenerativeModel):
    """A family whose loss turns NaN on chosen calls (a stand-in for a diverging model)."""

    family = "exploding"
    Config = models.get_family("vae").Config

    def __init__(self, spec, cfg, bad_calls):
        super().__init__(spec, cfg)
        self.w = torch.nn.Parameter(torch.ones(1))
        self.calls, self.bad_calls = 0, bad_calls

    def training_step(self, x, y, phase="main"):
        self.calls += 1
        loss = (self.w * x.mean()) ** 2
        if self.calls in self.bad_calls:
            loss = loss * float("nan")
        return models.StepOutput(loss, {"loss": loss.item()})

    def _sample(self, n, y, generator):
        return torch.zeros(n, *self.spec.shape)


def test_non_finite_steps_are_skipped_then_fail_loudly(tmp_path):
    x, y = data()
    spec_cfg = models.get_family("vae").Config()
    m = Exploding(SPEC, spec_cfg, bad_calls={2, 5})
    fit(m, x, y, cfg(max_bad_steps=3, ema_decay=None), checkpoint_dir=tmp_path / "ok", progress=False)
    state = Checkpoints(tmp_path / "ok").load_latest()
    assert state["bad_steps"] == 2 and torch.isfinite(state["model"]["w"]).all()

    # calls 1-2 (steps 0-1) are fine; steps 2 and 3 are skipped (2 bad of 2 allowed), the
    # checkpoint after step 4 is written; step 4's third bad call ends the run
    m = Exploding(SPEC, spec_cfg, bad_calls=set(range(3, 100)))
    with pytest.raises(NonFiniteLossError, match="3 non-finite steps .*max_bad_steps=2.*step 4"):
        fit(m, x, y, cfg(max_bad_steps=2, ema_decay=None), checkpoint_dir=tmp_path / "bad", progress=False)
    # the failure writes nothing: the last checkpoint is the one before it, with finite weights
    assert [p.name for p in (tmp_path / "bad").glob("*.pt")] == ["step-00000004.pt"]
    saved = Checkpoints(tmp_path / "bad").load_latest()
    assert saved["step"] == 4 and saved["bad_steps"] == 2
    assert torch.isfinite(saved["model"]["w"]).all()


def test_a_float16_overflow_shrinks_the_loss_scale_and_training_goes_on():
    """A step whose scaled gradients overflowed (float16 autocast on a GPU without bfloat16) was
    skipped without the scaler's update: the next step's unscale_ raised, and the scale never shrank."""
    from genzoo.models.trainer import _new_state, _phase_step

    class Overflowing(Exploding):
        def training_step(self, x, y, phase="main"):
            self.calls += 1
            big = 1e35 if self.calls == 1 else 1.0  # finite loss, gradients past float32 once scaled
            loss = (self.w * big) * x.mean()
            return models.StepOutput(loss, {"loss": loss.item()})

    x, y = data()
    m = Overflowing(SPEC, models.get_family("vae").Config(), bad_calls=set())
    st = _new_state(m, cfg(ema_decay=None), len(x), 0, torch.device("cpu"))
    st.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)  # as CUDA's float16 path makes it
    assert _phase_step(st, cfg(), x[:8], y[:8], "main") is None  # skipped
    assert st.scaler.get_scale() < 2.0**16
    assert _phase_step(st, cfg(), x[:8], y[:8], "main") is not None  # it raised here


class PoisonedGAN(GAN):
    """The real GAN whose noise draw is scaled by ``scale`` (inf: a NaN batch; 1e25: huge but
    finite) on the chosen calls of the discriminator's phase."""

    def __init__(self, spec, cfg, scale, disc_calls):
        super().__init__(spec, cfg)
        self.scale, self.disc_calls, self.calls, self.phase = scale, disc_calls, 0, None

    def training_step(self, x, y, phase="main"):
        self.calls += phase == "disc"
        self.phase = phase
        return super().training_step(x, y, phase)

    def _fake(self, n, y):
        z = torch.randn(n, self.cfg.latent_dim)
        if self.phase == "disc" and self.calls in self.disc_calls:
            z = z * self.scale
        return self.gen(z, y)


def all_finite(state):
    """Every floating-point tensor in a checkpoint's model, EMA and optimizer states is finite."""
    tensors = [*state["model"].values(), *(state["ema"] or {}).values()]
    tensors += [v for o in state["optimizers"].values() for st in o["state"].values() for v in st.values()]
    return all(torch.isfinite(t).all() for t in tensors if torch.is_tensor(t) and t.is_floating_point())


def test_a_skipped_gan_step_leaves_no_nan_in_any_checkpoint(tmp_path, tiny):
    """Case 7 with the real GAN: an inf in one noise batch makes the discriminator's loss NaN;
    the step is skipped, and the generator's BatchNorm statistics (which its forward pass had
    already updated) are restored, so every checkpoint and the samples stay finite."""
    x, y = data()
    m = PoisonedGAN(SPEC, models.get_family("gan").Config(**tiny["gan"]), float("inf"), {3})
    final, result = fit(m, x, y, cfg(max_bad_steps=3), checkpoint_dir=tmp_path, progress=False)
    assert result.bad_steps == 1
    for path in sorted(tmp_path.glob("*.pt")):
        assert all_finite(torch.load(path, weights_only=True)), path.name
    assert torch.isfinite(final.sample(8, generator=torch.Generator().manual_seed(0))).all()


def test_a_non_finite_state_is_never_checkpointed(tmp_path, tiny):
    """A huge but finite noise batch at step 6: every loss and gradient stays finite, but the
    generator's BatchNorm running variance overflows to inf. The check before each save names
    the tensor and fails loudly; the checkpoint of step 4 is the last one and is finite."""
    x, y = data()
    m = PoisonedGAN(SPEC, models.get_family("gan").Config(**tiny["gan"]), 1e25, {6})
    named = r"gan: model\.gen\.bn0\.running_var is not finite after step 8"
    with pytest.raises(NonFiniteStateError, match=named):
        fit(m, x, y, cfg(max_bad_steps=3), checkpoint_dir=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["step-00000004.pt"]
    saved = Checkpoints(tmp_path).load_latest()
    assert saved["step"] == 4 and saved["bad_steps"] == 0 and all_finite(saved)


def test_metrics_leave_through_callbacks_and_jsonl(tmp_path, tiny):
    seen = []

    class Recorder(Callback):
        def on_log(self, step, metrics):
            seen.append(step)

    x, y = data()
    m = models.build("pixelcnn", SPEC, tiny["pixelcnn"])
    fit(m, x, y, cfg(), callbacks=[Recorder(), JsonlLogger(tmp_path / "log.jsonl")], progress=False)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert seen == [2, 4, 6, 8] == [r["step"] for r in rows]
    assert all("bpd" in r and "lr" in r for r in rows)


def test_the_logged_learning_rate_is_the_one_its_step_trained_with(tiny):
    """Warm-up over 4 steps: step n (1-based) trains at lr * n / 4, and its row says so (the
    schedule had moved on to the next step's rate when the row was written)."""
    got = {}

    class Recorder(Callback):
        def on_log(self, step, metrics):
            got[step] = metrics["lr"]

    x, y = data()
    m = models.build("vae", SPEC, tiny["vae"])
    config = cfg(steps=6, log_every=1, warmup_steps=4, lr=1e-3, schedule="constant", ema_decay=None)
    fit(m, x, y, config, progress=False, callbacks=[Recorder()])
    assert got == pytest.approx({1: 2.5e-4, 2: 5e-4, 3: 7.5e-4, 4: 1e-3, 5: 1e-3, 6: 1e-3})


def test_checkpoints_keep_only_the_newest(tmp_path, tiny):
    x, y = data()
    fit(
        models.build("vae", SPEC, tiny["vae"]),
        x,
        y,
        cfg(steps=12, checkpoint_every=2, keep_checkpoints=2),
        checkpoint_dir=tmp_path,
        progress=False,
    )
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["step-00000010.pt", "step-00000012.pt"]
    assert not list(tmp_path.glob("*.tmp"))


def test_validation_picks_the_best_weights(tmp_path, tiny):
    scores = iter([5.0, 3.0, 4.0, 6.0])  # steps 2, 4, 6, 8: step 4 validates best
    x, y = data()
    m = models.build("vae", SPEC, tiny["vae"])
    final, result = fit(
        m,
        x,
        y,
        cfg(eval_every=2, keep_best=True, checkpoint_every=4, ema_decay=None),
        checkpoint_dir=tmp_path,
        progress=False,
        val_fn=lambda _: next(scores),
    )
    assert result.best_step == 4 and result.best_val == 3.0
    at_step_4 = torch.load(tmp_path / "step-00000004.pt", weights_only=True)["model"]
    for k, v in final.state_dict().items():
        assert torch.equal(v, at_step_4[k]), k


@pytest.mark.parametrize("family", ["pixelcnn", "realnvp", "vae"])
def test_ema_decay_gives_any_family_averaged_weights(family, tmp_path, tiny):
    """``train.ema_decay`` set: the family trains with an EMA copy, which validation scores and
    ``fit`` returns (the checkpoint keeps both); unset: no copy, the raw weights."""
    x, y = data()
    seen = []

    def run(folder, decay):
        torch.manual_seed(0)
        m = models.build(family, SPEC, tiny[family])
        val = lambda mm: seen.append(mm) or 0.0  # noqa: E731
        run_cfg = cfg(eval_every=8, keep_best=False, checkpoint_every=8, ema_decay=decay)
        return m, fit(m, x, y, run_cfg, checkpoint_dir=folder, progress=False, val_fn=val)[0]

    raw, final = run(tmp_path / "ema", 0.9)
    saved = torch.load(tmp_path / "ema" / "step-00000008.pt", weights_only=True)
    assert final is not raw and seen[-1] is final
    for k, v in final.state_dict().items():
        assert torch.equal(v, saved["ema"][k]), k
    assert any(not torch.equal(v, saved["model"][k]) for k, v in final.state_dict().items())
    raw, final = run(tmp_path / "plain", None)
    assert final is raw
    assert torch.load(tmp_path / "plain" / "step-00000008.pt", weights_only=True)["ema"] is None


def test_patience_stops_training_and_a_resumed_run_stops_at_the_same_step(
    tmp_path, tiny, caplog, monkeypatch
):
    """train.patience: after that many validations with no better score, training ends with
    the best weights; a run interrupted before that point and resumed stops at the same step
    with the same weights, and one resumed after it trains no further."""
    curve = {2: 5.0, 4: 3.0, 6: 4.0, 8: 3.5, 10: 6.0, 12: 2.0}  # step 12 would be better still
    x, y = data()

    def val(_model):  # the score at this validation's step
        seen.append(1)
        return curve[2 * len(seen)]

    def train(folder, **kw):
        torch.manual_seed(0)  # the same initial weights each time
        m = models.build("vae", SPEC, tiny["vae"])
        c = cfg(steps=20, eval_every=2, patience=2, checkpoint_every=3)
        return fit(m, x, y, c, checkpoint_dir=folder, progress=False, val_fn=val, **kw)

    seen = []
    final, result = train(tmp_path / "a")
    assert (result.steps, result.best_step, result.best_val, result.finished) == (8, 4, 3.0, True)
    # into a file, the stop is said after its step's progress line (it came before it), once
    import logging
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    seen.clear()
    with caplog.at_level(logging.INFO, logger="genzoo.trainer"):
        torch.manual_seed(0)
        fit(models.build("vae", SPEC, tiny["vae"]), x, y, cfg(steps=20, eval_every=2, patience=2), val_fn=val)
    said = [r.getMessage() for r in caplog.records if r.name == "genzoo.trainer"]
    assert said[-2].startswith("vae: step 8/20,") and said[-1] == (
        "vae: no better validation in 4 steps: stopped at step 8 of 20 (best: step 4)"
    ), said
    assert sum("no better validation" in m for m in said) == 1
    assert len(seen) == 4  # validated at 2, 4, 6, 8, then stopped: 2 validations without a better one
    seen.clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="genzoo.trainer"):
        part, r1 = train(tmp_path / "b", stop_at=5)
    assert not r1.finished and r1.steps == 5
    assert not [r for r in caplog.records if "no better validation" in r.getMessage()]  # stopped, not by it
    seen[:] = [1, 1]  # the resumed run validates from step 6 on
    again, r2 = train(tmp_path / "b")
    assert (r2.steps, r2.best_step, r2.finished) == (8, 4, True)
    for k, v in final.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    seen[:] = [1, 1, 1, 1]
    _, r3 = train(tmp_path / "b")  # its last checkpoint is the step it stopped at
    assert (r3.steps, r3.resumed_from, r3.finished) == (8, 8, True) and len(seen) == 4
    # without patience every step trains
    m = models.build("vae", SPEC, tiny["vae"])
    seen.clear()
    _, full = fit(m, x, y, cfg(steps=12, eval_every=2), progress=False, val_fn=val)
    assert (full.steps, full.best_step) == (12, 12)


def test_excluded_classes_are_never_seen_and_get_no_prior_mass(tiny):
    x, y = data()
    x[y == 1] = float("nan")  # any use of class 1 would make the loss non-finite
    model = models.build("realnvp", SPEC, tiny["realnvp"])
    trained, result = fit(model, x, y, cfg(exclude_classes=[1], max_bad_steps=0), progress=False)
    assert result.bad_steps == 0
    assert (
        trained.log_class_prior[1] == float("-inf") and torch.isfinite(trained.log_class_prior[[0, 2]]).all()
    )
    assert (trained.fill_labels(500, None, torch.Generator().manual_seed(0)) != 1).all()
    clean, _ = data()
    assert torch.isfinite(trained.log_prob(clean[:4])).all()  # the marginal skips class 1
    with pytest.raises(NonFiniteLossError):  # the same data without the exclusion fails
        fit(models.build("realnvp", SPEC, tiny["realnvp"]), x, y, cfg(max_bad_steps=0), progress=False)
    for bad in ([3], [0, 1, 2], [-1]):
        with pytest.raises(ValueError, match="exclude_classes"):
            fit(
                models.build("realnvp", SPEC, tiny["realnvp"]), x, y, cfg(exclude_classes=bad), progress=False
            )


@pytest.mark.parametrize("entry", ["../victim.txt", "ABSOLUTE", "sub/../../victim.txt", "link.pt"])
def test_an_index_naming_a_file_outside_its_folder_is_refused_and_deletes_nothing(tmp_path, entry, tiny):
    """save() deletes the files the index names beyond ``keep``: an entry pointing out of the
    folder (``../x``, an absolute path, a link out) would delete any file, so the index is refused."""
    victim = tmp_path / "victim.txt"
    victim.write_text("a user's file")
    root = tmp_path / "ckpt"
    root.mkdir()
    if entry == "ABSOLUTE":
        entry = str(victim)
    if entry == "link.pt":
        (root / "link.pt").symlink_to(victim)
    (root / "index.json").write_text(json.dumps([{"step": 1, "file": entry, "sha256": "0" * 64}]))
    ck = Checkpoints(root, keep=1)
    with pytest.raises(
        ValueError, match=rf"checkpoint index {root / 'index.json'}: entry file .* is outside"
    ):
        ck.save(5, {"step": 5})
    with pytest.raises(ValueError, match="is outside"):
        ck.load_latest()
    x, y = data()
    with pytest.raises(ValueError, match="is outside"):  # a training run meeting it stops before any step
        fit(models.build("vae", SPEC, tiny["vae"]), x, y, cfg(), checkpoint_dir=root, progress=False)
    assert victim.read_text() == "a user's file"


@pytest.mark.parametrize("pixels, images", [(None, 16), (10**6, 16), (640, 10), (64, 8)])
def test_batch_pixels_gives_large_images_smaller_batches(pixels, images, tiny):
    """At most ``batch_pixels`` pixels per step (here 64 per image), never under 8 images."""
    x, y = data()
    m = models.build("vae", SPEC, tiny["vae"])
    seen, step = [], m.training_step
    m.training_step = lambda xb, yb, phase: seen.append(len(xb)) or step(xb, yb, phase)
    _, result = fit(m, x, y, cfg(steps=3, batch_pixels=pixels), progress=False)
    assert seen == [images] * 3 and result.batch_size == images


def test_the_log_keeps_its_good_rows_when_a_kill_cut_one_short(tmp_path):
    """A line a kill cut short (or one that is not a row) is passed over, not the whole log."""
    log = tmp_path / "log.jsonl"
    log.write_text(
        '{"step": 5, "loss": 1.0}\n[1, 2]\n{"step": null}\n{"step": 10, "loss": 0.9}\n{"step": 15, "lo'
    )
    assert JsonlLogger._rows(log, 10) == ['{"step": 5, "loss": 1.0}', '{"step": 10, "loss": 0.9}']
    assert JsonlLogger._rows(tmp_path / "none.jsonl", 10) == []


def test_a_ctrl_c_once_the_index_names_a_checkpoint_finds_its_log_copy(tmp_path, tiny, monkeypatch):
    """The log's copy is written before the index names its checkpoint: a Ctrl+C right after the
    index was written, then the log removed (`dvc repro` removes a stage's outputs), resumes with
    the rows up to the checkpoint (a copy written after the index was lost to such a Ctrl+C)."""
    from genzoo.models import trainer

    x, y = data()
    write, log = trainer.atomic_write_text, tmp_path / "log.jsonl"

    def ctrl_c_once_indexed(path, text):
        write(path, text)
        if path.name == "index.json":
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "atomic_write_text", ctrl_c_once_indexed)
    with pytest.raises(KeyboardInterrupt):
        fit(models.build("vae", SPEC, tiny["vae"]), x, y, cfg(), checkpoint_dir=tmp_path / "ck",
            callbacks=[JsonlLogger(log)], progress=False)  # fmt: skip
    monkeypatch.undo()
    log.unlink()
    _, result = fit(models.build("vae", SPEC, tiny["vae"]), x, y, cfg(), checkpoint_dir=tmp_path / "ck",
                    callbacks=[JsonlLogger(log)], progress=False)  # fmt: skip
    assert result.resumed_from == 4
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [2, 4, 6, 8]


def test_the_rng_a_scoring_fork_keeps_is_the_cuda_device_it_runs_on():
    """CPU work forks the CPU's RNG alone; CUDA work its device's too (tests/test_gpu.py: on a GPU)."""
    from genzoo.models.base import rng_devices

    assert (
        rng_devices("cpu") == [] and rng_devices(torch.device("cuda", 1)) == [1] and rng_devices("mps") == [0]
    )
