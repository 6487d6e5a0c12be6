"""One training loop for every family.

Phases with their own optimizers (GAN: ``disc`` then ``gen``), warm-up + cosine schedules,
gradient clipping, AMP on CUDA, EMA weights wherever ``ema_decay`` is set, seeded batches,
periodic checkpoints written atomically with the *full* state (model, EMA, optimizers,
schedulers, AMP scaler, every RNG, the batch order), resume from the newest checkpoint whose
hash verifies, and a guard that skips non-finite steps and fails loudly after too many.
Metrics leave through :class:`Callback` objects; nothing here knows about tracking servers.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import pickle
import random
import re
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field
from torch import Tensor
from tqdm.auto import tqdm

from genzoo.models.base import (
    Config,
    DataSpec,
    GenerativeModel,
    atomic_write,
    atomic_write_text,
    by_pixels,
    rng_devices,
    sha256_file,
)
from genzoo.models.layers import ema_update

log = logging.getLogger("genzoo.trainer")


class TrainConfig(Config):
    """How to train (the model's architecture lives in its own config)."""

    steps: int = Field(1000, gt=0)
    batch_size: int = Field(64, gt=0)
    batch_pixels: int | None = Field(
        None,
        gt=0,
        description="at most this many pixels per batch (images x H x W, any channels; at least 8 images;"
        " null: batch_size as is): large images train on smaller batches, a step costs about the same at"
        " any size",
    )
    # an upper bound well above any sane rate (a GAN's absurd 1.0 still passes): 1e39 is a typo
    lr: float = Field(1e-3, gt=0, le=10)
    phase_lr: dict[str, Annotated[float, Field(gt=0, le=10)]] = Field(
        default_factory=dict, description="per-phase lr"
    )
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = Field(
        (0.9, 0.999), description="Adam's (beta1, beta2), each in [0, 1)"
    )
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    warmup_steps: int = Field(0, ge=0)
    schedule: str = Field("cosine", pattern="^(cosine|constant)$")
    ema_decay: float | None = Field(None, gt=0, lt=1)
    amp: bool = True  # mixed precision on CUDA only
    checkpoint_every: int = Field(500, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    log_every: int = Field(25, gt=0)
    max_bad_steps: int = Field(20, ge=0, description="non-finite steps tolerated")
    eval_every: int = Field(0, ge=0, description="validate every N steps (0: never)")
    keep_best: bool = Field(True, description="end with the weights that validated best")
    patience: int = Field(
        0, ge=0, description="stop after this many validations without a better one (0: train every step)"
    )
    exclude_classes: list[int] = Field(
        default_factory=list, description="classes left out of training (their prior becomes 0)"
    )
    likelihood_images: int | None = Field(
        1000,
        gt=0,
        description="validation and test bits/dim on at most this many images of each split "
        "(a seeded draw, the same every run; null: all)",
    )
    likelihood_pixels: int | None = Field(
        None,
        gt=0,
        description="fewer of them for large images: at most this many pixels per split (images x H x W; "
        "at least 100 images): a bound's cost per image grows with the image; null: likelihood_images",
    )

    def likelihood_count(self, spec: DataSpec) -> int | None:
        """Images of a split the validation and test bits/dim are measured on (None: all)."""
        if self.likelihood_pixels is None:
            return self.likelihood_images
        return by_pixels(self.likelihood_images or 2**62, self.likelihood_pixels, spec, 100)


# TrainConfig keys that change what is written to disk, never the weights
STORAGE_ONLY = frozenset({"checkpoint_every", "keep_checkpoints"})


class NonFiniteLossError(RuntimeError):
    pass


class NonFiniteStateError(NonFiniteLossError):
    """The weights, the EMA copy or an optimizer's state hold a NaN or an inf."""


class Callback:
    """Hooks through which metrics leave the trainer (JSON lines here; MLflow plugs in too)."""

    def on_start(self, info: dict[str, Any]) -> None: ...
    def on_log(self, step: int, metrics: dict[str, float]) -> None: ...
    # once the checkpoint's file is written, before the index names it: what a callback keeps beside
    # a checkpoint (the log's copy) is there by the time a resume can find the checkpoint
    def on_checkpoint(self, step: int, path: Path) -> None: ...
    def on_end(self, result: TrainResult) -> None: ...


class JsonlLogger(Callback):
    """Appends one JSON object per log step; survives resume (lines past the resume step
    are dropped so the file never holds the same step twice). Each checkpoint keeps a copy
    beside it, so a resume whose file was removed meanwhile (`dvc repro` removes a stage's
    outputs before it runs) starts from the rows up to its checkpoint."""

    COPY = "log-to-checkpoint.jsonl"  # the copy's name in the checkpoint folder (never the log's own)

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_start(self, info: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        start = info.get("start_step", 0)
        kept = []
        if start > 0:
            kept = self._rows(self.path, start)
            copy = Path(info["checkpoint_dir"]) / self.COPY if info.get("checkpoint_dir") else None
            if copy is not None and not any(json.loads(line).get("step", 0) < start for line in kept):
                kept = self._rows(copy, start) or kept  # the file lost its earlier rows: the checkpoint's
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self._f = open(self.path, "a")  # noqa: SIM115 (closed in on_end)

    @staticmethod
    def _rows(path: Path, start: int) -> list[str]:
        """The lines of ``path`` up to step ``start``; none where it is missing or unreadable."""
        try:
            lines = path.read_text().splitlines() if path.is_file() else []
        except (OSError, ValueError):
            return []
        kept = []
        for line in lines:  # a line a kill cut short (or not a row) is passed over, not the file
            try:
                row = json.loads(line)
            except ValueError:
                continue
            step = row.get("step", 0) if isinstance(row, dict) else None
            if isinstance(step, int | float) and not isinstance(step, bool) and step <= start:
                kept.append(line)
        return kept

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        self._f.write(json.dumps({"step": step, **metrics}) + "\n")
        self._f.flush()

    def on_checkpoint(self, step: int, path: Path) -> None:
        atomic_write_text(
            Path(path).parent / self.COPY, "".join(f"{line}\n" for line in self._rows(self.path, step))
        )

    def on_end(self, result: TrainResult) -> None:
        self._f.close()


@dataclass
class TrainResult:
    steps: int
    seconds: float  # wall-clock of the training: this process's, plus that of the runs it resumed from
    # (up to the checkpoint it resumed from: a model restored whole from its last checkpoint keeps its time)
    bad_steps: int
    resumed_from: int | None
    last: dict[str, float] = field(default_factory=dict)
    best_step: int | None = None  # step of the weights returned, when validation chose them
    best_val: float | None = None
    finished: bool = True  # every step trained, or stopped early by ``patience``; False: ``stop_at``
    batch_size: int | None = None  # images per step (``batch_size``, fewer with ``batch_pixels``)


# ----------------------------------------------------------------------------- RNG state


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """The RNG states :func:`rng_state` saved (torch takes them as CPU byte tensors; the CUDA
    devices this process sees, as many as were saved: a Ray task may see fewer)."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu(), i)
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- checkpoints


class Checkpoints:
    """``step-XXXXXXXX.pt`` files plus ``index.json`` recording each file's sha256."""

    def __init__(self, root: str | Path, keep: int = 2):
        self.root, self.keep = Path(root), keep
        self.index_path = self.root / "index.json"

    def _index(self) -> list[dict[str, Any]]:
        """The index's entries; an entry naming a file outside this folder (``../x``, an
        absolute path, a link out) refuses the whole index: save() deletes the files entries
        name, so such an index could delete any file."""
        if not self.index_path.exists():
            return []
        try:
            entries = json.loads(self.index_path.read_text())
        except json.JSONDecodeError:
            log.warning("checkpoint index %s is unreadable; ignoring it", self.index_path)
            return []
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError(
                f"checkpoint index {self.index_path}: not a list of entries; refusing it (remove it to "
                "start this training afresh)"
            )
        for e in entries:
            self._confined(e.get("file"))
        return entries

    def _confined(self, name: Any) -> Path:
        """``root / name`` when ``name`` is a plain file name whose path resolves inside the
        folder (a checkpoint's own name); a ValueError naming the index otherwise."""
        ok = isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name
        path = self.root / name if ok else None
        if path is None or path.resolve().parent != self.root.resolve():
            raise ValueError(
                f"checkpoint index {self.index_path}: entry file {name!r} is outside {self.root}; "
                "refusing the index (remove it to start this training afresh)"
            )
        return path

    def save(self, step: int, state: dict[str, Any], written: Callable[[Path], None] | None = None) -> Path:
        """Writes the checkpoint, calls ``written(path)``, then names it in the index (a kill
        between two of them leaves the checkpoint unlisted, never listed without what
        ``written`` keeps beside it)."""
        path = self.root / f"step-{step:08d}.pt"
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))
        if written is not None:
            written(path)
        entries = [e for e in self._index() if e["step"] != step]
        entries.append({"step": step, "file": path.name, "sha256": sha256_file(path)})
        entries.sort(key=lambda e: e["step"])
        # the index first, then the checkpoints it no longer names, those a kill after an earlier
        # index write left too (the other way round, a kill between them left an index naming only a
        # deleted file: keep_checkpoints 1 restarted from step 0); only names it writes itself
        atomic_write_text(self.index_path, json.dumps(entries[-self.keep :], indent=1))
        listed = {e["file"] for e in entries[-self.keep :]}
        for old in self.root.glob("step-*.pt"):
            if old.name not in listed and re.fullmatch(r"step-[0-9]{8}\.pt", old.name):
                old.unlink(missing_ok=True)
        return path

    def newest_step(self) -> int | None:
        """The step of the newest checkpoint the index lists that is there (a run resumes from it,
        or from an older one if it turns out damaged); None without any."""
        try:
            return max(
                (int(e["step"]) for e in self._index() if (self.root / e["file"]).is_file()), default=None
            )
        except (ValueError, KeyError, TypeError):  # an index refused or malformed: load_latest says why
            return None

    def load_latest(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """Newest checkpoint whose sha256 matches the index; corrupt ones are reported and
        skipped. Loaded with ``weights_only=True``: a pickled payload cannot run, and a file
        holding one is skipped like a corrupt one (the previous checkpoint, or none). Temp files
        left by a writer that was killed mid-write are removed (they were never indexed)."""
        for stale in self.root.glob(".step-*.tmp"):
            stale.unlink(missing_ok=True)
        for entry in reversed(self._index()):
            path = self._confined(entry["file"])
            if not path.exists():
                log.warning("checkpoint %s is listed but missing; trying an older one", path)
                continue
            digest = sha256_file(path)
            if digest != entry["sha256"]:
                log.error(
                    "checkpoint %s: sha256 mismatch (file %s..., index %s...); "
                    "falling back to an older checkpoint",
                    path,
                    digest[:12],
                    entry["sha256"][:12],
                )
                continue
            try:
                with warnings.catch_warnings():  # torch's note on a foreign pickle: the refusal below says it
                    warnings.filterwarnings(
                        "ignore", message="Detected pickle protocol", category=UserWarning
                    )
                    return torch.load(path, map_location=map_location, weights_only=True)
            except pickle.UnpicklingError:  # pickled objects: refused before any ran (anything else raises)
                log.error(
                    "checkpoint %s: refused, it holds more than tensors and plain values (nothing in "
                    "it was run); falling back to an older checkpoint",
                    path,
                )
        return None


# ----------------------------------------------------------------------------- the loop


def _lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


class Batches:
    """Seeded epoch permutations; its state is part of every checkpoint."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size = n, min(batch_size, n)
        self.gen = torch.Generator().manual_seed(seed)
        self.perm, self.pos = torch.randperm(n, generator=self.gen), 0

    def next(self) -> Tensor:
        if self.pos + self.batch_size > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "perm": self.perm, "pos": self.pos}

    def load(self, s: dict[str, Any]) -> None:
        self.gen.set_state(s["gen"].cpu())
        self.perm, self.pos = s["perm"].cpu(), s["pos"]


@dataclass
class _TrainState:
    """What one run carries from step to step. All but ``amp_dtype`` (it follows from the
    config and the device) goes into every checkpoint, so a resumed run continues exactly."""

    model: GenerativeModel
    ema: GenerativeModel | None  # an averaged copy of the weights when ``ema_decay`` is set
    opts: dict[str, torch.optim.Optimizer]  # one per phase, over that phase's parameters
    scheds: dict[str, torch.optim.lr_scheduler.LambdaLR]
    scaler: torch.amp.GradScaler  # a no-op unless float16 autocast runs on CUDA
    amp_dtype: torch.dtype | None  # None: full precision
    batches: Batches
    bad: int = 0  # non-finite steps skipped so far
    best: dict[str, Any] = field(default_factory=lambda: {"val": math.inf, "step": None, "state": None})
    seconds_before: float = 0.0  # training time up to the checkpoint this run resumed from
    last: dict[str, float] = field(default_factory=dict)  # the latest logged figures (the result's)
    # figures since the last log line: a checkpoint between two log lines keeps them, so the first
    # line after a resume averages the same steps as a run that was never stopped
    window: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    @property
    def judged(self) -> GenerativeModel:
        """The model that validation scores and ``fit`` returns: the EMA copy when there is one."""
        return self.ema if self.ema is not None else self.model


# ---------------------------------------------------------------- set-up and resume


def excluded_error(excluded: list[int], num_classes: int) -> str | None:
    """What is wrong with ``exclude_classes`` for data of ``num_classes`` classes, or None."""
    if any(not 0 <= c < num_classes for c in excluded) or len(set(excluded)) >= num_classes:
        n = num_classes
        return f"{excluded}: distinct classes of the data's {n} (0 to {n - 1}), not all of them"
    return None


def _training_set(x: Tensor, y: Tensor, cfg: TrainConfig, num_classes: int) -> tuple[Tensor, Tensor]:
    """The images the run may see: all but the ``exclude_classes`` (a held-out class)."""
    excluded = cfg.exclude_classes
    if problem := excluded_error(excluded, num_classes):
        raise ValueError(f"exclude_classes: {problem}")
    if not excluded:
        return x, y
    keep = ~torch.isin(y, torch.tensor(excluded))
    return x[keep], y[keep]


def _class_log_prior(y: Tensor, num_classes: int, excluded: list[int]) -> Tensor:
    """log p(class) from the label counts, add-one smoothed so a rare class keeps some mass;
    an excluded class gets none (log 0 = -inf): the model never samples it."""
    smoothed = torch.bincount(y, minlength=num_classes).float() + 1  # (K,)
    smoothed[excluded] = 0
    return torch.log(smoothed / smoothed.sum())


def _new_state(
    model: GenerativeModel, cfg: TrainConfig, n: int, seed: int, device: torch.device
) -> _TrainState:
    """Optimizers, schedules, EMA, AMP scaler and batch order for a run that starts at step 0."""
    ema = copy.deepcopy(model).eval().requires_grad_(False) if cfg.ema_decay else None
    opts, scheds = {}, {}
    for phase in model.phases:
        opts[phase] = torch.optim.AdamW(
            model.phase_parameters(phase),
            lr=cfg.phase_lr.get(phase, cfg.lr),
            betas=cfg.betas,
            weight_decay=cfg.weight_decay,
        )
        scheds[phase] = torch.optim.lr_scheduler.LambdaLR(opts[phase], _lr_lambda(cfg))
    amp_dtype = None
    if cfg.amp and device.type == "cuda":  # bfloat16 needs no loss scaling; float16 does
        # (bfloat16 in hardware: T4s and V100s only emulate it, slowly, and take float16)
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # (torch before 2.5 counts no emulation)
            native = torch.cuda.is_bf16_supported()
        amp_dtype = torch.bfloat16 if native else torch.float16
    return _TrainState(
        model=model,
        ema=ema,
        opts=opts,
        scheds=scheds,
        scaler=torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16),
        amp_dtype=amp_dtype,
        batches=Batches(n, by_pixels(cfg.batch_size, cfg.batch_pixels, model.spec, 8), seed),
    )


def _resume(st: _TrainState, saved: dict[str, Any] | None) -> int | None:
    """Loads a checkpoint (from :meth:`Checkpoints.load_latest`) into ``st``, RNGs included;
    returns the step it was taken at, or None when there is none (a fresh run)."""
    if saved is None:
        return None
    st.model.load_state_dict(saved["model"])
    if st.ema is not None and saved.get("ema") is not None:
        st.ema.load_state_dict(saved["ema"])
    for phase in st.model.phases:
        st.opts[phase].load_state_dict(saved["optimizers"][phase])
        st.scheds[phase].load_state_dict(saved["schedulers"][phase])
    st.scaler.load_state_dict(saved["scaler"])
    st.batches.load(saved["batches"])
    set_rng_state(saved["rng"])
    st.bad = saved["bad_steps"]
    st.best = saved.get("best") or st.best
    st.seconds_before = float(saved.get("seconds", 0.0))  # (checkpoints older than the field: 0)
    st.last = dict(saved.get("last") or {})  # (a run resumed at its end trains no step to log them)
    st.window = defaultdict(list, {k: list(v) for k, v in (saved.get("window") or {}).items()})
    log.info("%s: resuming from its checkpoint at step %d", st.model.family, saved["step"])
    return saved["step"]


def _snapshot(st: _TrainState, step: int, seconds: float) -> dict[str, Any]:
    """The full state after ``step`` steps, ``seconds`` of training in all, as :func:`_resume`
    reads it back."""
    return {
        "step": step,
        "seconds": seconds,
        "bad_steps": st.bad,
        "model": st.model.state_dict(),
        "ema": st.ema.state_dict() if st.ema is not None else None,
        "optimizers": {p: o.state_dict() for p, o in st.opts.items()},
        "schedulers": {p: s.state_dict() for p, s in st.scheds.items()},
        "scaler": st.scaler.state_dict(),
        "batches": st.batches.state(),
        "rng": rng_state(),
        "best": st.best,
        "last": st.last,
        "window": {k: list(v) for k, v in st.window.items()},
    }


# ---------------------------------------------------------------- one step


def _phase_step(
    st: _TrainState, cfg: TrainConfig, xb: Tensor, yb: Tensor, phase: str
) -> dict[str, float] | None:
    """One optimisation step of one phase on the batch ``xb`` (B, C, H, W), ``yb`` (B,).
    Returns the step's logs, or None when the loss or the gradient norm was not finite (the
    update is then not applied and the gradients are dropped)."""
    model, opt = st.model, st.opts[phase]
    model.zero_grad(set_to_none=True)
    # the forward pass itself changes buffers (BatchNorm's running statistics, even under
    # no_grad); a skipped step must leave them as they were, so keep a copy (they are small)
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    autocast = (
        torch.autocast("cuda", dtype=st.amp_dtype) if st.amp_dtype is not None else contextlib.nullcontext()
    )
    with autocast:
        out = model.training_step(xb, yb, phase)
    ok = bool(torch.isfinite(out.loss))
    if ok:
        st.scaler.scale(out.loss).backward()
        st.scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
        params = model.phase_parameters(phase)
        if cfg.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        ok = bool(torch.isfinite(norm))
    if not ok:
        if torch.isfinite(out.loss):  # unscaled: float16's scale shrinks (and the next unscale_ may run)
            st.scaler.update()
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        return None
    st.scaler.step(opt)
    st.scaler.update()
    return out.logs


def _count_bad_step(st: _TrainState, cfg: TrainConfig, step: int, phase: str) -> None:
    """Records a skipped step; past ``max_bad_steps`` the run fails loudly (nothing written)."""
    st.bad += 1
    log.warning(
        "%s step %d phase %s: non-finite loss or gradient, skipped (%d/%d)",
        st.model.family,
        step,
        phase,
        st.bad,
        cfg.max_bad_steps,
    )
    if st.bad > cfg.max_bad_steps:
        raise NonFiniteLossError(
            f"{st.model.family}: {st.bad} non-finite steps (limit train.max_bad_steps="
            f"{cfg.max_bad_steps}); last at step {step}, phase {phase}. "
            "Lower the learning rate or check the data."
        )


def _non_finite(named: dict[str, Any], prefix: str) -> str | None:
    """The first floating-point tensor in a (nested) state dict holding a NaN or an inf."""
    for key, value in named.items():
        if isinstance(value, dict):
            found = _non_finite(value, f"{prefix}.{key}")
            if found:
                return found
        elif torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            # a log-probability may be -inf (an excluded class's prior is log 0); never NaN or +inf
            if key.endswith("log_class_prior") and not (value.isnan().any() or value.isposinf().any()):
                continue
            return f"{prefix}.{key}"
    return None


def _require_finite(st: _TrainState, step: int) -> None:
    """Raises :class:`NonFiniteStateError` naming the first tensor of the model (parameters and
    buffers), the EMA copy or an optimizer's state that is not finite. Called before every
    checkpoint is written and before ``fit`` returns, so no NaN/inf state is ever saved."""
    parts = {"model": st.model.state_dict()}
    if st.ema is not None:
        parts["ema"] = st.ema.state_dict()
    parts.update({f"optimizers.{p}": o.state_dict()["state"] for p, o in st.opts.items()})
    for prefix, named in parts.items():
        found = _non_finite(named, prefix)
        if found:
            raise NonFiniteStateError(
                f"{st.model.family}: {found} is not finite after step {step}; no checkpoint "
                "written (the last one saved is kept). Lower the learning rate or check the data."
            )


def _train_step(
    st: _TrainState, cfg: TrainConfig, xb: Tensor, yb: Tensor, step: int
) -> list[dict[str, float]]:
    """Step ``step`` (0-based): every phase in order (GAN: disc, then gen on the same batch),
    each advancing its schedule whether or not it was applied, then the EMA. Returns the logs
    of the phases that were applied."""
    applied = []
    for phase in st.model.phases:
        logs = _phase_step(st, cfg, xb, yb, phase)
        if logs is None:
            _count_bad_step(st, cfg, step, phase)
        else:
            applied.append(logs)
        st.scheds[phase].step()
    if st.ema is not None:  # a short memory at first, so early weights fade fast
        ema_update(st.ema, st.model, min(cfg.ema_decay, (1 + step) / (10 + step)))
    return applied


# ---------------------------------------------------------------- logging, validation, finish


def on_terminal() -> bool:
    """Progress has somewhere to draw a bar: a terminal, or a notebook (tqdm's widget)."""
    return "ipykernel" in sys.modules or bool(getattr(sys.stderr, "isatty", lambda: False)())


def _due(done: int, every: int, last: int) -> bool:
    """Whether a periodic action (log, validate, checkpoint) runs after ``done`` steps."""
    return done % every == 0 or done == last


def _speed(since: tuple[int, float], done: int, end: int) -> str:
    """``, 12.3 steps/s, ETA 0:37`` of a progress line: the steps since the line before (at
    ``since``: its step and time), and the time left to ``end`` at that pace (none at the end)."""
    seconds = time.perf_counter() - since[1]
    if done <= since[0] or seconds <= 0:
        return ""
    rate = (done - since[0]) / seconds
    left = round((end - done) / rate)
    return f", {rate:.1f} steps/s" + (f", ETA {left // 60}:{left % 60:02d}" if done < end else "")


def _window_means(window: dict[str, list[float]], lr: float) -> dict[str, float]:
    """The mean of each logged figure since the last log line, and the learning rate of the step
    logged."""
    return {**{k: float(np.mean(v)) for k, v in window.items()}, "lr": lr}


def _validate(st: _TrainState, val_fn: Callable[[GenerativeModel], float]) -> float:
    """``val_fn`` on the model ``fit`` would return, in eval mode, under a forked RNG so that
    validating never changes what training draws next."""
    judged = st.judged
    judged.eval()
    with torch.random.fork_rng(devices=rng_devices(judged.device)), torch.no_grad():
        val = float(val_fn(judged))
    judged.train(st.ema is None)  # the EMA copy stays in eval mode; the trained model goes back
    return val


def _keep_if_best(best: dict[str, Any], val: float, step: int, judged: GenerativeModel) -> dict[str, Any]:
    """The best validation so far (lower is better), with a copy of its weights."""
    if not val < best["val"]:  # (a NaN score never wins)
        return best
    return {
        "val": val,
        "step": step,
        "state": {k: v.detach().clone() for k, v in judged.state_dict().items()},
    }


def _out_of_patience(st: _TrainState, cfg: TrainConfig, done: int) -> bool:
    """``patience`` validations in a row without a better score than the best (read from the
    best step, which checkpoints keep: a resumed run stops where the first would have)."""
    best = st.best["step"]
    return bool(cfg.patience) and best is not None and done - best >= cfg.patience * cfg.eval_every


def _select_best(st: _TrainState, cfg: TrainConfig, finished: bool) -> int | None:
    """At the end of a finished run with ``keep_best``, loads the best-validating weights
    into the model to return; returns their step (None: the last weights stay)."""
    if not (cfg.keep_best and st.best["state"] is not None and finished):
        return None
    st.judged.load_state_dict(st.best["state"])
    return st.best["step"]


# ---------------------------------------------------------------- the loop


def fit(
    model: GenerativeModel,
    x: Tensor,
    y: Tensor,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    checkpoint_dir: str | Path | None = None,
    callbacks: list[Callback] = (),
    progress: bool = True,
    stop_at: int | None = None,
    val_fn: Callable[[GenerativeModel], float] | None = None,
) -> tuple[GenerativeModel, TrainResult]:
    """Train ``model`` on images ``x`` (N, C, H, W) in [0, 1] with labels ``y`` (N,).

    Returns the model to use afterwards (the EMA copy when the family keeps one) and a
    :class:`TrainResult`. ``stop_at`` ends early at that step (checkpointing first), as an
    interruption would; a later call resumes from there. ``val_fn(model) -> float`` (lower
    is better) scores the model that will be returned every ``eval_every`` steps, under a
    forked RNG so validation never changes training; with ``keep_best`` the best-scoring
    weights are returned (early stopping by model selection).
    """
    device = torch.device(device)
    x, y = _training_set(x, y, cfg, model.spec.num_classes)
    seed_everything(seed)
    model.to(device).train()
    model.log_class_prior.copy_(_class_log_prior(y, model.spec.num_classes, cfg.exclude_classes))
    st = _new_state(model, cfg, len(x), seed, device)
    ckpts = Checkpoints(checkpoint_dir, cfg.keep_checkpoints) if checkpoint_dir else None
    # loaded on the CPU: the RNG states must be CPU tensors (on CUDA every resume raised
    # "RNG state must be a torch.ByteTensor"); load_state_dict moves the rest to the model's device
    resumed = _resume(st, ckpts.load_latest("cpu")) if ckpts else None
    start = resumed or 0

    for cb in callbacks:
        cb.on_start({"family": model.family, "start_step": start, "steps": cfg.steps,
                     "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None})  # fmt: skip
    x, y = x.to(device), y.to(device)
    window = st.window  # figures logged since the last log line (a resumed run's: its checkpoint's)
    end = min(cfg.steps, stop_at) if stop_at is not None else cfg.steps
    if _out_of_patience(st, cfg, start):  # resumed from where an earlier run stopped early
        end = start
    t0 = time.perf_counter()
    # a bar on a terminal; into a pipe or a file (`dvc repro`, `genzoo train > log`) a line every
    # tenth of the steps instead of the bar's carriage returns
    lines = progress and not on_terminal()
    bar = tqdm(
        range(start, end),
        initial=start,
        total=cfg.steps,
        desc=model.family,
        disable=not progress or lines,
        leave=False,
        dynamic_ncols=True,
    )
    shown: dict[str, list[float]] = defaultdict(list)  # figures since the last progress line
    since = (start, time.perf_counter())  # the step and time of the last progress line: its speed
    patience_ran_out = False
    for step in bar:
        lr = st.scheds[model.phases[0]].get_last_lr()[0]  # this step's (the schedule moves on after it)
        idx = st.batches.next()  # (B,)
        for logs in _train_step(st, cfg, x[idx], y[idx], step):
            for key, value in logs.items():
                window[key].append(value)
                if lines:
                    shown[key].append(value)
        done = step + 1
        if _due(done, cfg.log_every, cfg.steps):
            st.last = last = _window_means(window, lr)
            window.clear()
            for cb in callbacks:
                cb.on_log(done, last)
            bar.set_postfix({k: f"{v:.3g}" for k, v in list(last.items())[:3]})
        if val_fn is not None and cfg.eval_every and _due(done, cfg.eval_every, cfg.steps):
            val = _validate(st, val_fn)
            st.best = _keep_if_best(st.best, val, done, st.judged)
            for cb in callbacks:
                cb.on_log(done, {"val": val})
            if _out_of_patience(st, cfg, done):
                end, patience_ran_out = done, True
        if lines and (_due(done, max(1, cfg.steps // 10), cfg.steps) or done == end):  # (end: patience's too)
            # the steps since the last line (every log_every steps, last's: a line between two logs
            # showed an earlier step's figures under its own step); none when all were skipped
            now = _window_means(shown, lr) if shown else {}
            shown.clear()
            figures = "".join(f", {k} {v:.3g}" for k, v in list(now.items())[:3])
            log.info("%s: step %d/%d%s%s", model.family, done, cfg.steps, figures, _speed(since, done, end))
            since = (done, time.perf_counter())
        if patience_ran_out:  # (after its step's progress line)
            log.info("%s: no better validation in %d steps: stopped at step %d of %d (best: step %d)",
                     model.family, done - st.best["step"], done, cfg.steps, st.best["step"])  # fmt: skip
        if ckpts and _due(done, cfg.checkpoint_every, end):
            _require_finite(st, done)
            snapshot = _snapshot(st, done, st.seconds_before + time.perf_counter() - t0)
            ckpts.save(done, snapshot, lambda path, at=done: [cb.on_checkpoint(at, path) for cb in callbacks])
        if done == end:
            break
    bar.close()

    finished = end == cfg.steps or _out_of_patience(st, cfg, end)
    chosen = _select_best(st, cfg, finished)
    if finished:
        st.judged.after_training(x, y)
    _require_finite(st, end)  # what fit returns is saved as the model
    result = TrainResult(
        steps=end,
        seconds=st.seconds_before + time.perf_counter() - t0,
        bad_steps=st.bad,
        resumed_from=resumed,
        last=st.last,
        best_step=chosen,
        best_val=st.best["val"] if chosen is not None else None,
        finished=finished,
        batch_size=st.batches.batch_size,
    )
    for cb in callbacks:
        cb.on_end(result)
    return st.judged.eval(), result
