"""Run layout and provenance (ground floor): where every stage's outputs live, what decides
them (the code a stage reads, derived from its imports; the data; the params) and the one way
to train a model variant. Stages import this module, ``config``, ``data``, ``tracking``,
``figures`` and ``sample``; never each other. A stage that needs another's output reads the
file named here.

Layout (``run.runs_dir``, default ``runs/``)::

    <family>/                 train@<family>: model.json/.safetensors, metrics.json, curves
    evaluation/evaluator/     the evaluator, real features, reference rows
    evaluation/<family>/      quality.json, samples.npz, latent.npz, anomaly.json,
                              usefulness.json; holdout/ and subsets/ (model variants)
    evaluation/usefulness/    reference.json
    report/                   index.html, summary.json, families.csv

Checkpoints: ``<run.checkpoints_dir>/<family>/<key>/``.
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
import ctypes
import errno
import fcntl
import functools
import glob
import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

import genzoo.tasks
from genzoo import models
from genzoo.models.base import GenerativeModel, as_if_created, fsync_path, sha256_file
from genzoo.models.trainer import STORAGE_ONLY, TrainConfig, TrainResult, fit
from genzoo.tasks.config import Params, ParamsError, did_you_mean, fingerprint
from genzoo.tasks.data import DataError, data_hash, read_manifest
from genzoo.tasks.errors import GenzooError, ModelNotFound, UsageError, check_output_dir

log = logging.getLogger("genzoo.train")  # its one line: a variant starts training (train_variant)
# The folder holding models/ tasks/ metrics/: the repository in an editable install,
# site-packages/genzoo in a wheel; code paths are relative to it (as dvc.yaml writes them).
ROOT = Path(genzoo.tasks.__file__).resolve().parents[1]
# genzoo's subpackages and their folders (pyproject's package-dir)
PACKAGES = {"models": "models", "tasks": "tasks", "metrics": "metrics", "flows": "flows"}
# ast.parse is not thread-safe in CPython 3.11 (python/cpython#106905: "AST constructor
# recursion depth mismatch"), and the flow asks several families' keys from threads at once
_PARSE = threading.Lock()


# ----------------------------------------------------------------------------- one run at a time


WAIT_SAY_S = 60  # a run waiting for the folder says so again this often


class PipelineBusy(GenzooError, RuntimeError):
    """Another pipeline run (``genzoo run``, a Prefect deployment, a DVC stage) holds this
    project's runs folder."""


@contextlib.contextmanager
def exclusive(
    runs_dir: str | Path, label: str = "", waiting: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold ``<runs_dir>/.pipeline.lock`` for the run; a second run fails at once, clearly,
    naming the folder and the holder (``.pipeline.holder``: its pid and start time, and
    ``label``: which Prefect flow run it is). The flow holds it for a whole run and every DVC
    stage's ``main()`` for its stage, so ``dvc repro`` never writes under a running ``genzoo
    run`` (nor the reverse). With ``waiting`` (a run queued from the Prefect UI), a busy folder
    is waited for instead: ``waiting(holder)`` is called as the wait starts and every
    ``WAIT_SAY_S`` while it lasts. Folders it had to make for the lock are removed again on the
    way out when nothing but the lock landed in them: a command that fails on bad input leaves
    no trace."""
    folder = Path(runs_dir)
    check_output_dir(folder, "run.runs_dir", into=True)  # a file on the way: one line, before any work
    check_runs_folder(folder)
    made = [d for d in (folder, *folder.parents) if not d.exists()]  # the innermost first
    folder.mkdir(parents=True, exist_ok=True)
    lock, holder = FileLock(folder / ".pipeline.lock", timeout=0), folder / ".pipeline.holder"

    def who() -> str:
        try:
            return holder.read_text().strip()
        except OSError:
            return "holder unknown"

    said = None
    while True:
        try:
            lock.acquire(timeout=0 if said is None else 1)
            break
        except Timeout:
            if waiting is None:
                raise PipelineBusy(
                    f"{folder}: another genzoo pipeline is running on this folder ({who()}); wait for it or "
                    "stop it"
                ) from None
            if said is None or time.monotonic() - said >= WAIT_SAY_S:
                waiting(who())
                said = time.monotonic()
    try:
        since = f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        holder.write_text(f"{since}, {label}" if label else since)
        yield
    finally:
        holder.unlink(missing_ok=True)
        if made and {p.name for p in folder.iterdir()} <= {".pipeline.lock", ".genzoo-id"}:
            (folder / ".genzoo-id").unlink(missing_ok=True)
            (folder / ".pipeline.lock").unlink()  # while still held: no one else can have it
        lock.release()
        for d in made:
            with contextlib.suppress(OSError):  # not empty (or gone): kept
                d.rmdir()


def runs_folder_id(runs_dir: str | Path) -> str | None:
    """This runs folder's own random id (``<runs_dir>/.genzoo-id``, made on first use): what
    tells its MLflow runs from those of another folder at the same path (two containers' or
    machines' ``/app/runs`` logging to one tracking server). Shared storage shares it with the
    cluster's nodes."""
    folder = Path(runs_dir)
    path = folder / ".genzoo-id"
    try:
        if not path.is_file():
            import uuid

            folder.mkdir(parents=True, exist_ok=True)
            try:  # made whole or not at all: the first process's id wins
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(uuid.uuid4().hex + "\n")
        for _ in range(50):  # another process between its create and its write: a moment
            if made := path.read_text().strip():
                return made
            time.sleep(0.01)
    except OSError as e:  # a folder others own, read-only: its runs matched by their path alone
        log.warning(
            "%s: the runs folder's id is unreadable (%s): its MLflow runs matched by path only", path, e
        )
    return None


# what genzoo writes at the top of a runs folder (besides hidden files: its lock, a .gitignore)
RUNS_ENTRIES = frozenset(
    {"evaluation", "report", "human", "teachers", "bench", "timeline.json", "lost+found"}
)


def check_runs_folder(folder: Path) -> None:
    """Refuse, before any work, a user's folder given as ``run.runs_dir`` (its report/ and
    <family>/ files would be replaced without a word): one genzoo never used (no run lock, no
    model) that holds what genzoo does not write at the top of a runs folder. A folder genzoo
    used may hold more (checkpoints or prepared data placed inside it). A folder at its top that
    links elsewhere is refused too: it would be written through, into the folder it names."""
    if not folder.is_dir():
        return
    entries = sorted(e for e in folder.iterdir() if not e.name.startswith("."))
    for entry in entries:
        if entry.is_symlink() and os.path.isdir(entry) and entry.name in RUNS_ENTRIES | set(models.REGISTRY):
            raise UsageError(
                f"{entry}: a symbolic link to {os.path.realpath(entry)}; genzoo replaces what it writes "
                "there: remove the link (point run.runs_dir elsewhere instead)"
            )
    used = (folder / ".pipeline.lock").exists() or any((e / "model.json").is_file() for e in entries)
    theirs = [e.name for e in entries if e.name not in RUNS_ENTRIES | set(models.REGISTRY)]
    if theirs and not used:
        raise UsageError(
            f"run.runs_dir={folder}: holds {theirs[0]}, which genzoo does not write there, and no run of "
            "genzoo used it: not a runs folder; choose a new or empty folder for run.runs_dir"
        )


# ----------------------------------------------------------------------------- layout


def use_threads(n: int) -> None:
    """Compute on ``n`` threads: torch's, and the BLAS and OpenMP pools numpy and scikit-learn
    compute in (threadpoolctl). CPU results depend on the count (the float sums of a matrix
    product: scikit-learn's MLP judge fitted on 1 and on 2 BLAS threads differs by 0.1 in a
    weight), so a Ray task, a DVC stage and a command given the same params compute alike.

    threadpoolctl limits the pools already loaded; a library loaded later (scikit-learn's own
    OpenMP, SciPy's OpenBLAS under PCA and the judges: imported when a stage first needs them)
    sizes its pool from the environment when it loads, so the same count is set there too
    (processes this one starts inherit it, and it stays set for the rest of this one: every
    stage sets its own count first)."""
    from threadpoolctl import threadpool_limits

    for var in THREAD_VARIABLES:
        os.environ[var] = str(n)
    torch.set_num_threads(n)
    threadpool_limits(limits=n)


# what OpenMP, OpenBLAS and MKL read, when they load, to size their pools
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def family_dir(params: Params, family: str) -> Path:
    """train@<family>'s outputs."""
    return Path(params.run.runs_dir) / family


def trained_families(params: Params, names: list[str] | str, choices: str = "") -> list[str]:
    """``--families`` for a stage that reads trained models (a list, or comma-separated): each
    must be a family in params and trained under ``run.runs_dir``; none is an error. ``choices``:
    what else the option takes, for the message (", or all")."""
    if isinstance(names, str):
        names = [f.strip() for f in names.split(",") if f.strip()]
    unknown = [f for f in names if f not in params.models]
    if not names:
        raise UsageError(f"--families: none given (families: {', '.join(params.families)}{choices})")
    if unknown:
        raise UsageError(
            f"--families: {', '.join(unknown)} not in params "
            f"(families: {', '.join(params.families)}{choices}{did_you_mean(unknown, params.families)})"
        )
    for f in names:
        if not (family_dir(params, f) / "model.json").exists():
            raise ModelNotFound(
                f"{f}: not trained under {params.run.runs_dir} ({params.command(f'run --families {f}')})"
            )
    return list(dict.fromkeys(names))


def evaluation_dir(params: Params) -> Path:
    """Everything the evaluation stages write (and the report reads): one folder, so the DVC
    ``report`` stage depends on it whole whatever the families are."""
    return Path(params.run.runs_dir) / "evaluation"


def scored_by_another_evaluator(params: Params, quality: dict | None) -> bool:
    """Whether a family's ``quality.json`` was scored by another evaluator than the current one
    (its features, so its distances, are not comparable with the others': the report leaves it
    out, and `best` does not choose by it)."""
    scorer = (read_json(evaluation_dir(params) / "evaluator" / "evaluator.json") or {}).get("sha256")
    return bool(quality and scorer and quality.get("evaluator_sha256", scorer) != scorer)


def check_outside_source(params: Params, out_dir: str | Path | None = None) -> None:
    """Refuse outputs inside the image folder of a ``folder:`` source: their files (the prepared
    splits, a family's samples.png, a dataset's class folders) would become images of a class of
    the next prepare, in the user's own folder. ``out_dir``: a dataset's folder other than the
    params' ``augment.out_dir``."""
    kind, _, folder = params.data.source.partition(":")
    if kind != "folder":
        return
    root = Path(folder).expanduser().resolve()
    for key, path in (("data.prepared_dir", params.data.prepared_dir), ("run.runs_dir", params.run.runs_dir),
                      ("augment.out_dir", out_dir or params.augment.out_dir)):  # fmt: skip
        if Path(path).expanduser().resolve().is_relative_to(root):
            raise DataError(
                f"{key}={path} is inside the image folder data.source={params.data.source}: choose a folder "
                "outside it (genzoo's files there would become images of the next prepare)"
            )


def measure_again(params: Params, family: str) -> str:
    """The command that scores ``family`` with the current evaluator: its evaluation, or its
    training first when its model was trained on other data than the prepared data (its samples
    then have nothing to be scored against)."""
    return params.command(f"{'train' if on_other_data(params, family) else 'evaluate'} --family {family}")


def on_other_data(params: Params, family: str) -> bool:
    """``family``'s model was trained on other data than the prepared data (another source, seed
    or split): its samples have nothing to be scored against until it is trained again."""
    manifest = read_manifest(params.data.prepared_dir, required=False)
    trained_on = (read_json(family_dir(params, family) / "model.json") or {}).get("data_sha256")
    return bool(manifest) and trained_on not in (None, data_hash(manifest))


def evaluator_dir(params: Params) -> Path:
    return evaluation_dir(params) / "evaluator"


def checkpoint_dir(params: Params, family: str, key: str) -> Path:
    """One folder per training key: a re-run with the same key resumes, any change starts afresh."""
    return Path(params.run.checkpoints_dir) / family / key


# ----------------------------------------------------------------------------- replacing a folder

MADE_BY = "genzoo"
# Each kind of folder genzoo replaces as a whole: the names it writes at its top (nothing else
# may sit there) and the manifest keys of a folder genzoo wrote before it marked its folders
# (a manifest with these keys, no ``made_by``, and only these files is genzoo's).
OWNED_KINDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "prepared-data": (
        frozenset({"manifest.json", "train.npz", "val.npz", "test.npz"}),
        frozenset({"source", "shape", "levels", "num_classes", "class_names", "seed", "splits"}),
    ),
    "synthetic-dataset": (
        # png/: the image folders of datasets written before the imagefolder format (images/)
        frozenset({"manifest.json", "images.npz", "png", "images", "hf", "README.md"}),
        frozenset({"name", "request", "families", "params_hash", "n", "sha256"}),
    ),
}
# What genzoo writes below the top of a synthetic dataset: `<row>.png` in a class folder (the
# image's row in images.npz), `hf/`'s shards, info and state, and the caches `datasets` writes
# beside them when the dataset is used (`load_from_disk(...).map(...)`: regenerable)
_ROW = re.compile(r"([0-9]{6,})\.png")
_HF_FILE = re.compile(
    r"(data-[0-9]{5}-of-[0-9]{5}|cache-[0-9a-f]+(_[0-9]{5}_of_[0-9]{5})?)\.arrow|dataset_info\.json|state\.json"
)  # a cache's shards: `.map(..., num_proc=N)`
_LEGACY_PNG = re.compile(r"[0-9]+(/[0-9]+\.png)?")


def written_inside(kind: str, manifest: dict[str, Any]) -> Callable[[str], bool]:
    """Whether a path below the top of a ``kind`` folder (relative, with ``/``) is one genzoo
    writes there, by the folder's manifest: for a synthetic dataset the class folders it names
    (``class_folders``) holding one ``<row>.png`` per image row below ``n`` and ``.empty`` in a
    class with no image; ``hf/``'s files; ``png/<class>/<row>.png`` only in a dataset written
    before the formats (no ``formats`` key). Nothing below the top of prepared data."""
    if kind != "synthetic-dataset":
        return lambda rel: False
    folders = manifest.get("class_folders")
    folders = folders if isinstance(folders, list) else []
    counts = manifest.get("counts_per_class") if isinstance(manifest.get("counts_per_class"), list) else []
    n = manifest.get("n") if isinstance(manifest.get("n"), int) else None
    legacy = "formats" not in manifest

    def ok(rel: str) -> bool:
        top, _, rest = rel.partition("/")
        parts = rest.split("/")
        if top == "hf":
            return len(parts) == 1 and _HF_FILE.fullmatch(parts[0]) is not None
        if top == "png":
            return legacy and _LEGACY_PNG.fullmatch(rest) is not None
        if top != "images" or parts[0] not in folders or len(parts) > 2:
            return False
        if len(parts) == 1:
            return True
        if parts[1] == ".empty":  # formats.EMPTY_CLASS
            c = folders.index(parts[0])
            return c < len(counts) and counts[c] == 0
        row = _ROW.fullmatch(parts[1])
        return row is not None and (n is None or int(row[1]) < n)

    return ok


_RENAME_EXCHANGE = 2  # linux/fs.h


class NotGenzooOutput(GenzooError, ValueError):
    """A folder genzoo was asked to replace is not one it wrote; the message names it."""


def mark(kind: str) -> dict[str, str]:
    """The keys that make a manifest.json genzoo's: which program wrote the folder, what it
    is and which version; :func:`replacing_dir` replaces only folders that carry them."""
    if kind not in OWNED_KINDS:
        raise KeyError(f"unknown output kind {kind!r}; known: {sorted(OWNED_KINDS)}")
    from genzoo import __version__

    return {"made_by": MADE_BY, "kind": kind, "version": __version__}


def check_owned(folder: Path, kind: str) -> None:
    """Raise :class:`NotGenzooOutput` unless ``folder`` (which exists) is a ``kind`` folder
    genzoo wrote: a real folder (not a link) whose manifest.json carries genzoo's mark (or
    is of the form genzoo wrote before the mark), holding only the files genzoo writes there,
    in its sub-folders too (:func:`written_inside`), none of them a symbolic link (but DVC's links
    to its cache: :func:`dvc_cache_link`). An empty folder holds nothing to lose and passes."""
    files, legacy_keys = OWNED_KINDS[kind]
    how = "move it away or choose another path; genzoo replaces only folders it wrote"
    if folder.is_symlink():
        raise NotGenzooOutput(f"{folder}: is a symbolic link, refusing to replace it; {how}")
    if not folder.is_dir():
        raise NotGenzooOutput(f"{folder}: exists and is not a folder; {how}")
    names = {p.name for p in folder.iterdir()}
    if not names:
        return
    manifest = read_json(folder / "manifest.json")
    marked = (
        isinstance(manifest, dict) and manifest.get("made_by") == MADE_BY and manifest.get("kind") == kind
    )
    legacy = isinstance(manifest, dict) and "made_by" not in manifest and legacy_keys <= manifest.keys()
    if not (marked or legacy):
        raise NotGenzooOutput(f"{folder}: not a genzoo {kind} folder (no genzoo manifest.json); {how}")
    if names - files:
        raise NotGenzooOutput(
            f"{folder}: holds {', '.join(sorted(names - files))}, which genzoo did not write; {how}"
        )
    edited = [name for name, ok in _edited_texts(folder, manifest) if not ok]
    if edited:
        raise NotGenzooOutput(
            f"{folder}: {' and '.join(edited)} changed since genzoo wrote "
            f"{'them' if len(edited) > 1 else 'it'}; keep your edits: {how}"
        )
    inside = written_inside(kind, manifest)
    for dirpath, dirnames, filenames in os.walk(folder):  # os.walk follows no link
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) and not dvc_cache_link(path):
                raise NotGenzooOutput(
                    f"{path}: a symbolic link inside {folder}, which genzoo never writes; refusing to "
                    f"replace {folder}"
                )
            rel = os.path.relpath(path, folder)
            if os.sep in rel and not inside(rel.replace(os.sep, "/")):
                raise NotGenzooOutput(f"{folder}: holds {rel}, which genzoo did not write; {how}")


def manifest_digest(manifest: dict[str, Any]) -> str:
    """The sha256 of a manifest's content, but its own ``manifest_sha256`` (JSON, keys sorted)."""
    rest = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def _edited_texts(folder: Path, manifest: dict[str, Any]) -> list[tuple[str, bool]]:
    """(name, as genzoo wrote it) for the texts whose sha256 the manifest records: a dataset's
    card (``card_sha256``) and the manifest itself (``manifest_sha256``); none before they were."""
    out = []
    if isinstance(manifest.get("card_sha256"), str):
        card = folder / "README.md"
        out.append(("README.md", not card.exists() or sha256_file(card) == manifest["card_sha256"]))
    if isinstance(manifest.get("manifest_sha256"), str):
        out.append(("manifest.json", manifest_digest(manifest) == manifest["manifest_sha256"]))
    return out


# a file of DVC's cache: <cache>/files/md5/ab/cdef... (DVC 3) or <cache>/ab/cdef... (DVC 2)
_DVC_CACHE_FILE = re.compile(r"/(files/md5/)?[0-9a-f]{2}/[0-9a-f]{30}$")


def dvc_cache_link(path: str | Path) -> bool:
    """``path`` is a link DVC made to a file of its cache (``dvc checkout`` / ``dvc pull`` with
    ``cache.type`` symlink; one whose file ``dvc gc`` removed since): replacing it loses nothing,
    the cache keeps the file."""
    target = os.path.realpath(path)
    return (os.path.isfile(target) or not os.path.lexists(target)) and bool(_DVC_CACHE_FILE.search(target))


def check_replaceable(target: Path, kind: str) -> None:
    """Refuse early (before any compute) what :func:`replacing_dir` would refuse at ``target``."""
    if target.is_symlink() or target.exists():
        check_owned(target, kind)


def exchange_dirs(a: Path, b: Path) -> bool:
    """Swap the folders at ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``):
    both paths exist at every moment. False where the system or file system cannot (not
    Linux, an old kernel or libc, a file system without it); nothing has moved then."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"exchanging {a} and {b}: {os.strerror(err)}")


@contextlib.contextmanager
def replacing_dir(target: Path, kind: str) -> Iterator[Path]:
    """A fresh folder beside ``target`` to write into; when the block ends it replaces
    ``target`` as a whole, and when the block fails it is removed and ``target`` is left
    untouched. The new folder's manifest.json must carry :func:`mark` (``kind``).

    Only a folder genzoo wrote is ever replaced (:func:`check_owned`, checked before the
    block runs and again before the swap): a user's folder at ``target``, a link, or a
    genzoo folder someone added files to is refused with :class:`NotGenzooOutput`, nothing
    written.

    The swap: ``renameat2(RENAME_EXCHANGE)`` trades the new folder and the old one in one
    step, so a reader of ``target`` sees the whole old folder or the whole new one at every
    moment, never neither; the old one (now at the temporary name) is deleted afterwards.
    Where the file system cannot exchange, two renames (old aside, new in) leave a window of
    microseconds without ``target``; the old folder is still deleted only once the new one is
    in place. A symlink-flip (``target`` a link to versioned folders) would avoid the
    fallback's window too, but DVC outputs, users' scripts and ``rm -r`` would all meet a
    link where they expect a folder, so genzoo keeps real folders."""
    if kind not in OWNED_KINDS:
        raise KeyError(f"unknown output kind {kind!r}; known: {sorted(OWNED_KINDS)}")
    check_replaceable(target, kind)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(target)
    with _writing_lock(target) as tmp:  # held until the new folder is in place and the old one gone
        tmp.mkdir()  # (a folder of that name already there: refused, and not removed below)
        try:
            as_if_created(tmp, folder=True)  # the folder users get: 0755 under umask 022, not 0700
            yield tmp
            made = read_json(tmp / "manifest.json")
            if not isinstance(made, dict) or made.get("made_by") != MADE_BY or made.get("kind") != kind:
                raise RuntimeError(f"{target}: the new folder's manifest.json lacks genzoo's mark ({kind})")
            if not (target.is_symlink() or target.exists()):
                durable(tmp)
                os.rename(tmp, target)
                durable(target.parent, files=False)
                return
            check_owned(target, kind)  # it may have changed while the block ran
            durable(tmp)  # on disk before the old version goes: a crash after the swap keeps one whole
            old = tmp if exchange_dirs(tmp, target) else _swap_by_renames(tmp, target)
            durable(target.parent, files=False)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)  # the old version, once the new one is in place


_NO_FLOCK = (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP)  # file systems without it


def _temp_prefix(target: Path) -> str:
    """The hidden names :func:`replacing_dir` writes beside ``target``: this host's (a lock on a
    file system shared between hosts may be host-local: another host's writes are never swept)."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
    return f".{target.name}.{host}."


@contextlib.contextmanager
def _writing_lock(target: Path) -> Iterator[Path]:
    """The folder to write the new ``target`` into (not yet made), beside it, and an exclusive lock
    on ``<folder>.lock``, taken before the folder exists and held for as long as it is written: the
    kernel drops it when the writer dies (a SIGKILL, the OOM killer), so a folder whose lock can be
    taken is abandoned (:func:`_remove_abandoned`), whatever process number or container the
    writer had. On a file system without flock the write goes on unlocked (and is never swept)."""
    fd, name = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".lock", dir=target.parent)
    lock = Path(name)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            if e.errno not in _NO_FLOCK:
                raise
        yield lock.with_suffix("")
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def _remove_abandoned(target: Path) -> None:
    """Remove the folders beside ``target`` that a write on this host which died left (a SIGKILL,
    the OOM killer, a power cut): each a partial copy of a dataset nothing else would ever delete,
    known by its ``.lock`` file that no process holds. A live writer's (its lock held, or a lock
    this process may not take or the file system cannot), another host's, and any folder without
    such a lock file (a fallback swap's copy of the old version among them) are left alone."""
    for lock in target.parent.glob(glob.escape(_temp_prefix(target)) + "*.lock"):
        folder = lock.with_suffix("")
        if lock.is_symlink() or not lock.is_file():
            continue
        try:
            fd = os.open(lock, os.O_RDWR)  # (gone since, or another user's: not ours to judge)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # being written (or no flock here: never taken for abandoned)
            if folder.is_dir() and not folder.is_symlink():
                log.warning("%s: removing %s, left by an interrupted write", target, folder.name)
                shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                lock.unlink(missing_ok=True)
        finally:
            os.close(fd)


def durable(folder: Path, files: bool = True) -> None:
    """What is written under ``folder`` (its files and folders; with ``files=False`` the folder's
    own entries) on the disk, not only in the page cache: one ``syncfs`` of its file system
    (0.1 s for 10,000 files here), else an fsync of each. A file system that cannot fsync a folder
    (some FUSE, CIFS) is taken at its word."""
    if files:
        fd = os.open(folder, os.O_RDONLY)
        try:
            if _syncfs(fd):
                return
        finally:
            os.close(fd)
        for root, dirs, names in os.walk(folder):
            for name in [*names, *dirs]:
                fsync_path(os.path.join(root, name))
    fsync_path(folder)


def _syncfs(fd: int) -> bool:
    """Linux's syncfs(2) on ``fd``'s file system; False where there is none or it fails."""
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs(fd) == 0
    except (AttributeError, OSError):
        return False


def _swap_by_renames(new: Path, target: Path) -> Path:
    """``target`` aside, ``new`` in its place (the fallback of :func:`exchange_dirs`); when
    the second rename fails the old folder goes back. Returns the folder holding the old."""
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    os.replace(target, aside / target.name)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(aside / target.name, target)
        aside.rmdir()
        raise
    return aside


def model_sha(params: Params, family: str) -> str | None:
    """The sha256 of ``family``'s weights in runs/ now (None: not trained)."""
    path = family_dir(params, family) / "model.safetensors"
    return sha256_file(path) if path.is_file() else None


def usefulness_key(params: Params, manifest: dict[str, Any] | None = None) -> str | None:
    """The key of the real-data rows (runs/evaluation/usefulness/reference.json) these params
    make on the prepared data: the usefulness settings, the recipes measured, the seed, the
    baselines, the threads, the data and the code (None: no prepared data). A family's
    usefulness.json names the key it was measured against (``reference_key``)."""
    manifest = manifest or read_manifest(params.data.prepared_dir, required=False)
    if not manifest:
        return None
    u = params.usefulness
    names = list(u.recipes) + ([] if params.augment.recipe in u.recipes else [params.augment.recipe])
    return fingerprint(
        {"u": u.model_dump(mode="json", exclude={"families", "train"}), "seed": params.seed,
         "recipes": {name: params.recipe(name).model_dump(mode="json") for name in names},
         "primary": params.augment.recipe, "reject_copies": params.augment.reject_copies,
         "baselines": params.evaluate.baselines.model_dump(mode="json"),
         "threads": params.threads("evaluator"), "data": data_hash(manifest), "code": code_hash("usefulness")}
    )[:16]  # fmt: skip


def of_reference(usefulness: Any, key: str | None) -> bool:
    """False when a usefulness.json's lifts are against other real-data rows than those ``key``
    names (:func:`usefulness_key`: the rows the current settings make; a ``genzoo usefulness
    -o ...`` or a profile measures against others); True otherwise (``key`` None: no prepared
    data; a file written before they named their rows). The report, ``best`` and the dataset
    card go by this alike."""
    return not (key and isinstance(usefulness, dict)) or usefulness.get("reference_key", key) == key


def other_models(params: Params, figures: dict, shas: dict[str, str | None] | None = None) -> list[str]:
    """The families of a study whose images came from other weights than runs/ holds now (trained
    again, or on other data, or deleted since): its figures are not theirs. A study made before
    studies recorded their models: none. ``shas``: the weights' digests, where known."""
    made, shas = figures.get("models") or {}, shas or {}
    return [
        f
        for f in figures["families"]
        if f in made and made[f] != (shas[f] if f in shas else model_sha(params, f))
    ]


def warn_if_stale(
    params: Params,
    family: str,
    doing: str,
    logger: logging.Logger,
    others: dict[str | None, Params] | None = None,
) -> None:
    """Say that ``family``'s model was made with other params, data or code than ``params``
    (what `genzoo status` calls stale) and is ``doing`` ("evaluated") as it is, naming the profile
    of ``others`` (:func:`other_profiles`) it is up to date with; refuse a model whose weights are
    missing (`genzoo status`: incomplete), before any work."""
    train = params.command(f"train --family {family}")
    out = family_dir(params, family)
    missing = [f for f in ("model.json", "model.safetensors") if not (out / f).is_file()]
    if missing == ["model.json", "model.safetensors"]:  # not trained: the caller's own refusal says so
        return
    if missing:
        raise ModelNotFound(
            f"{family}: {', '.join(missing)} missing in {out} (`genzoo status`: incomplete): `{train}` "
            f"makes it again, or `dvc checkout train@{family}` restores the recorded one"
        )
    if not isinstance(read_json(out / "metrics.json"), dict):  # a training stopped (or running) there
        logger.warning(
            "%s: metrics.json missing or unreadable in %s (`genzoo status`: incomplete: a training of it "
            "stopped before its end, or is running); %s as it is (`%s` to finish it)",
            family, out, doing, train,
        )  # fmt: skip
    elif up_to_date(params, family) is None:
        made = [name for name, other in (others or {}).items() if up_to_date(other, family) is not None]
        if made:  # a quick run's model, used without --profile quick: training it here would replace it
            flag = f"--profile {made[0]}" if made[0] else "no --profile"
            fix = f"with --profile {made[0]}" if made[0] else f"without --profile {params.profile}"
            logger.warning(
                "%s: trained with %s, not these params; %s as it is (run this %s to use that run's settings, "
                "or `%s` to train it with these, replacing that model)", family, flag, doing, fix, train,
            )  # fmt: skip
            return
        logger.warning(
            "%s: trained with other params, data or code than these (stale, see `%s`); "
            "%s as it is (`%s` to bring it up to date)", family, params.command("status"), doing, train,
        )  # fmt: skip


def shown(path: str | Path) -> str:
    """``path`` as a record that may leave this machine names it (a dataset's manifest):
    relative to the working directory when inside it, so the absolute paths the pipeline hands
    its stages and the relative ones of a command make the same record; else as given."""
    p = Path(path)
    if p.is_absolute():
        for inside, top in ((p, Path.cwd()), (p.resolve(), Path.cwd().resolve())):
            with contextlib.suppress(ValueError):
                return inside.relative_to(top).as_posix()
    return str(p)


def read_json(path: str | Path) -> Any:
    """The JSON at ``path``; None when it is missing or not (whole) JSON, as a cache miss."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def npz_key(path: Path) -> str | None:
    """The evaluation key an npz of the evaluation (samples.npz, latent.npz) was written by; None
    when it is missing, unreadable or holds none. Its figures' file (quality.json, the evaluator's
    metrics.json) is written last: an evaluation cut short between them leaves the newer pictures
    beside the older figures."""
    import numpy as np

    try:
        with np.load(path) as z:
            return str(z["key"]) if "key" in z.files else None
    except (OSError, ValueError, KeyError):
        return None


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float as None: JSON has no NaN (Kendall's tau of tied
    rankings, Krippendorff's alpha of answers that never vary are undefined), and a reader other
    than Python's (``jq``, a browser) refuses it."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def family_run_id(params: Params, family: str) -> str | None:
    """The MLflow run of ``family``'s training (recorded in its metrics.json), if tracked."""
    metrics = read_json(family_dir(params, family) / "metrics.json") or {}
    return metrics.get("mlflow", {}).get("run_id")


# True while a Ray task runs that Ray assigned no GPU (flows/cluster.py: _on_node)
GPU_UNASSIGNED: contextvars.ContextVar[bool] = contextvars.ContextVar("genzoo_gpu_unassigned", default=False)


def resolve_device(name: str, key: str = "run.device") -> torch.device:
    """``run.device`` (or the option ``key``): ``auto`` is CUDA when present, but in a Ray task
    given no GPU (``num_gpus: 0``: the CPU, as asked); naming an absent CUDA device, or no device
    at all, fails naming ``key``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and not GPU_UNASSIGNED.get() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ParamsError(f"{key}={name}: not a device genzoo runs on (auto, cpu, cuda, cuda:N or mps)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParamsError(f"{key}={name}: no CUDA device is available on this machine (use auto or cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ParamsError(f"{key}={name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ParamsError(f"{key}={name}: MPS is not available on this machine (use auto or cpu)")
    return dev


def training_device(params: Params, family: str) -> torch.device:
    """Where ``family`` trains (its pipeline model, its generators on subsets): ``run.device``,
    where ``auto`` is CUDA when the family's ``ray.resources`` ask for a GPU and the CPU
    otherwise, in a Ray task (which Ray gives a GPU by the same resources), a DVC stage and a
    command alike: the same params train on the same kind of device (``Params.device_kind``,
    part of the model's key). Asked for a GPU on a machine with none: a ParamsError naming the key."""
    kind = params.device_kind(family)
    if params.run.device != "auto":
        return resolve_device(params.run.device)
    if kind == "cuda" and not torch.cuda.is_available():
        own = params.ray.resources.get(family)  # the family's own block, where it sets num_gpus
        block = family if own and "num_gpus" in own.model_fields_set else "default"
        where = f"ray.resources.{block}.num_gpus"
        raise ParamsError(
            f"{where}={params.resources(family).num_gpus}: {family} asks for a GPU (run.device: auto) and "
            "this machine has no CUDA device; set it to 0 to train on the CPU"
        )
    return torch.device(kind)


# ----------------------------------------------------------------------------- code provenance


def _module_file(name: str, root: Path) -> str | None:
    """``genzoo.models.base`` -> ``models/base.py`` (a package -> its ``__init__.py``); None
    for what is not genzoo's (torch, ...) or is the public API package ``genzoo`` itself."""
    parts = name.split(".")
    if parts[0] != "genzoo" or len(parts) < 2 or parts[1] not in PACKAGES:
        return None
    rel = Path(PACKAGES[parts[1]], *parts[2:])
    if (root / rel / "__init__.py").is_file():
        return (rel / "__init__.py").as_posix()
    if (root / rel.with_suffix(".py")).is_file():
        return rel.with_suffix(".py").as_posix()
    return None


@functools.lru_cache(maxsize=256)
def _imported_names(source: str, filename: str) -> frozenset[str]:
    """The module names a file's ``source`` imports (parsed once per content: the stages' code
    hashes read many of the same files, and parsing is most of their cost)."""
    names: set[str] = set()
    with _PARSE:
        tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)  # `from pkg import module`
    return frozenset(names)


def _imports(path: Path, root: Path) -> set[str]:
    """The genzoo files ``path`` imports (anywhere in it: lazy imports are read too), with
    the ``__init__.py`` of every package on the way (importing runs them)."""
    names = _imported_names(path.read_text(), str(path))
    files = set()
    for name in names:
        parts = name.split(".")
        for i in range(2, len(parts) + 1):  # genzoo.models, genzoo.models.base
            f = _module_file(".".join(parts[:i]), root)
            if f is not None:
                files.add(f)
    return files


def family_files() -> dict[str, str]:
    """family -> its model file (``models/vae.py``), from the registry."""
    return {f: _module_file(cls.__module__, ROOT) for f, cls in models.REGISTRY.items()}


@functools.cache
def code_files(stage: str, family: str | None = None, root: Path = ROOT) -> tuple[str, ...]:
    """The code ``tasks/<stage>.py`` reads, sorted: every genzoo file it imports, transitively.

    ``models/__init__.py`` imports every family to register it; those edges are not followed,
    so a family's model file counts only where that family is the stage's (``family``): an
    edit to models/vae.py re-runs the VAE's stages alone. The same list is dvc.yaml's code
    deps (tests/tasks/test_layout.py keeps them equal) and the stage's cache key
    (:func:`code_hash`), so the two cannot disagree."""
    own = family_files()
    others = set(own.values()) - ({own[family]} if family else set())
    return _closure([f"tasks/{stage}.py", *([own[family]] if family else [])], others, root)


def _closure(todo: list[str], others: set[str], root: Path) -> tuple[str, ...]:
    """``todo``'s files and every genzoo file they import, transitively, but ``others``; sorted."""
    seen: set[str] = set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo += [g for g in _imports(root / f, root) if g not in others]
    return tuple(sorted(seen))


def module_code_hash(module: str, root: Path = ROOT) -> str:
    """Content hash of genzoo module ``module`` (``genzoo.models.evaluator``) and every genzoo
    file it imports, transitively (no family's model file): the key of what it alone computes,
    as a teacher CNN stored for the stages that share it."""
    start = _module_file(module, root)
    if start is None:
        raise ValueError(f"{module}: not a genzoo module")
    files = _closure([start], set(family_files().values()) - {start}, root)
    return fingerprint({f: (root / f).read_bytes().hex() for f in files})[:16]


def code_hash(stage: str, family: str | None = None, root: Path = ROOT) -> str:
    """Content hash of :func:`code_files` (the files are read each time: an edit counts at once)."""
    files = code_files(stage, family, root)
    return fingerprint({f: (root / f).read_bytes().hex() for f in files})[:16]


# ----------------------------------------------------------------------------- model variants


# what train@<family> writes to family_dir (dvc.yaml's outs)
FAMILY_OUTPUTS = (
    "model.json",
    "model.safetensors",
    "samples.png",
    "loss.png",
    "curve.csv",
    "log.jsonl",
    "metrics.json",
)


def train_inputs(params: Params, family: str, manifest: dict) -> dict[str, Any]:
    """What decides ``family``'s outputs: its params block, the prepared data and its code (its
    model.json keeps them as ``made_with``: `genzoo status` says which changed)."""
    cfg, n = params.train_config(family), params.run.samples_per_class
    return variant_inputs(params, family, cfg, manifest, "train", samples_per_class=n)


def key_of(inputs: dict[str, Any]) -> str:
    """The key of a model's inputs (:func:`train_inputs`, :func:`variant_inputs`): equal keys
    mean equal weights (on CPU)."""
    return fingerprint(inputs)[:16]


def train_key(params: Params, family: str, manifest: dict) -> str:
    """The key of :func:`train_inputs`: names ``family``'s checkpoints and stamps its model."""
    return key_of(train_inputs(params, family, manifest))


def require_trained(params: Params, family: str) -> None:
    """Refuse a family with no model in ``run.runs_dir``, naming the command (with its profile)
    that trains it."""
    path = family_dir(params, family) / "model.json"
    if family in params.models and not path.exists():
        train = params.command(f"train --family {family}")
        raise ModelNotFound(f"{path}: no trained model; run `{train}` first")


def checkpoints_key(params: Params, family: str, manifest: dict) -> str:
    """The key of ``family``'s checkpoint folder: its :func:`train_key` without how often and how
    many checkpoints are kept (``STORAGE_ONLY``) and the sample grid's size
    (``run.samples_per_class``), which change no weight (a resume lands on the same parameters).
    The model's own key keeps them, as dvc.yaml's `train@` params do, so a change makes the model
    again, from its checkpoints: a long training stopped to checkpoint more often resumes where it
    was, and a larger grid is drawn from the finished training's last checkpoint, not from step 0."""
    inputs = train_inputs(params, family, manifest)
    train = {k: v for k, v in inputs["params"]["train"].items() if k not in STORAGE_ONLY}
    kept = {k: v for k, v in inputs.items() if k != "samples_per_class"}
    return key_of({**kept, "params": {**inputs["params"], "train": train}})


def newest_checkpoint(params: Params, family: str) -> int | None:
    """The step of ``family``'s newest checkpoint for its current params, data and code (the
    training resumes from it), or None."""
    from genzoo.models.trainer import Checkpoints

    manifest = read_manifest(params.data.prepared_dir, required=False)
    if manifest is None:
        return None
    return Checkpoints(
        checkpoint_dir(params, family, checkpoints_key(params, family, manifest))
    ).newest_step()


def unloadable(config: Path) -> str | None:
    """Why the model at ``config`` does not load as `genzoo sample` loads it (an edited
    model.json whose net no longer builds its weights, weights that are no safetensors file
    though their sha256 was recorded again), or None when it loads."""
    from safetensors import SafetensorError

    try:
        models.load(config)
    except SafetensorError as e:  # e.g. a pickle: never unpickled
        return f"model.safetensors is not a safetensors file: {e}"
    except Exception as e:  # whatever stops it loading: it is not a model to take for current
        said = (str(e).splitlines() or [type(e).__name__])[0]
        return said.replace(f"{config}: ", "model.json: ").replace(f"{config.parent}/", "")
    return None


def up_to_date(params: Params, family: str, loads: bool = False) -> dict[str, Any] | None:
    """The metrics of ``family``'s outputs when they exist, are whole and were made from the
    current params, data and code; else None (it needs training). ``loads``: and the model
    loads (an edited model.json keeps its fingerprint and weights' hash: a training that skips
    it would keep it damaged), as the commands that decide to train ask."""
    out = family_dir(params, family)
    manifest = read_manifest(params.data.prepared_dir, required=False)
    meta = read_json(out / "model.json")
    metrics = read_json(out / "metrics.json")
    if manifest is None or not isinstance(meta, dict) or not isinstance(metrics, dict):
        return None
    if meta.get("fingerprint") != train_key(params, family, manifest):
        return None
    if not all((out / f).is_file() for f in FAMILY_OUTPUTS):
        return None
    if sha256_file(out / "model.safetensors") != meta.get("sha256"):
        return None
    if loads and (why := unloadable(out / "model.json")):
        log.warning("%s: damaged (%s): trained again", family, why)
        return None
    return metrics


def variant_inputs(
    params: Params, family: str, cfg: TrainConfig, manifest: dict, stage: str, **extra: Any
) -> dict[str, Any]:
    """What decides a trained ``family`` model: its architecture, ``cfg``, seed and threads
    (CPU results depend on them), the data, the code of ``stage`` (which trains it) and
    ``extra`` (a subset, ...)."""
    block = {**params.family_block(family), "train": cfg.model_dump(mode="json")}
    return {"params": block, "data": data_hash(manifest), "code": code_hash(stage, family), **extra}


def variant_key(
    params: Params, family: str, cfg: TrainConfig, manifest: dict, stage: str, **extra: Any
) -> str:
    """The key of :func:`variant_inputs`."""
    return key_of(variant_inputs(params, family, cfg, manifest, stage, **extra))


def cached_variant(
    path: Path, key: str, device: torch.device | str = "cpu"
) -> tuple[GenerativeModel, dict] | None:
    """The model saved at ``path`` (model.json + .safetensors) when it was made with ``key``."""
    meta = read_json(path)
    if not meta or meta.get("key") != key or not path.with_suffix(".safetensors").is_file():
        return None
    return models.load(path, device), meta


def train_variant(
    params: Params,
    family: str,
    x: torch.Tensor,
    y: torch.Tensor,
    spec,
    cfg: TrainConfig,
    path: Path,
    stamp: Callable[[TrainResult], dict[str, Any]],
    seed: int | None = None,
    **fit_kwargs: Any,
) -> tuple[GenerativeModel, TrainResult]:
    """Train ``family`` on ``x`` (N, C, H, W) in [0, 1] and ``y`` (N,) with ``cfg``, the one way
    every variant trains (the pipeline's model, a generator on a subset, a model without a
    class): threads, seeded initial weights (``seed``, default the params'), fit; saved to
    ``path`` with ``stamp(result)`` (its key, ...) when it finished (all its steps, or stopped
    early by ``patience``); ``stamp`` is called just before the save, the moment to clear what
    the new model replaces (tasks/train.py: the former model's metrics and log). Returns the
    model and the trainer's result."""
    params.require(family)
    use_threads(params.threads(family))
    seed = params.seed if seed is None else seed
    # the initial weights depend on the seed alone, not on what ran before in this worker
    torch.manual_seed(seed)
    model = models.build(family, spec, params.net_config(family))
    device = training_device(params, family)
    log.info("%s: %d parameters, %d steps on %s -> %s", family, sum(p.numel() for p in model.parameters()),
             cfg.steps, device, path)  # fmt: skip
    fit_kwargs.setdefault("progress", False)
    model, result = fit(model, x, y, cfg, seed=seed, device=device, **fit_kwargs)
    if result.finished:  # a run interrupted on purpose (stop_at) leaves no model
        models.save(model, path, extra=stamp(result))
    return model, result


def other_profiles(
    params: Params, path: str | Path, overrides: list[str] | None, profile: str | None
) -> dict[str | None, Params]:
    """The params file at ``path`` as each of its other profiles than ``profile`` makes it (None:
    no profile), with the same ``overrides``: what a stale family may have been made with. A
    profile that does not load made nothing here and is left out."""
    from genzoo.tasks.config import load_params

    others = {}
    for name in [None, *params.profiles]:
        if name != profile:  # (an override shadowed: said once already, with ``params``)
            with contextlib.suppress(ParamsError):
                others[name] = load_params(path, overrides, name, warn=False)
    return others


# what a command's params would do to models of another profile (same_profile's ``because``)
DATASET_BECAUSE = (
    "these params would filter and label the images drawn from {it} otherwise (and, under the run's name, "
    "replace the run's dataset)"
)
STUDY_BECAUSE = "these params would draw {it} at other settings than the ones measured"
REPORT_BECAUSE = (
    "the report would give other settings than the ones that made {it}, and replace the run's own report"
)
ANOMALY_BECAUSE = "these params would benchmark {it} at other settings and replace the run's anomaly figures"


def same_profile(
    params: Params,
    families: list[str],
    doing: str,
    path: str | Path,
    overrides: list[str] | None = None,
    profile: str | None = None,
    because: str = "these params would measure {it} at other settings and replace what the other families "
    "were measured with",
) -> None:
    """Refuse, before any work, to ``doing`` models made under another of the params file's
    profiles than ``profile`` (`make run PROFILE=quick`, then `genzoo evaluate` without it): the
    command would measure them at other settings and replace the evaluator (or reference rows,
    the run's dataset) the other families' figures were made with. A model stale under every
    profile is the stage's own warning (:func:`warn_if_stale`). ``because`` says what these params would
    do to them ({it}: "it" or "them")."""
    from genzoo.tasks.errors import UsageError

    known = [f for f in families if f in params.models]  # another name: the command's own error
    stale = [f for f in known if (Path(params.run.runs_dir) / f / "model.json").exists()
             and up_to_date(params, f) is None]  # fmt: skip
    if not stale:
        return
    for name, other in other_profiles(params, path, overrides, profile).items():
        made = [f for f in stale if up_to_date(other, f) is not None]
        it, was = ("them", "they were") if len(made) > 1 else ("it", "it was")
        doing_it = doing.format(it=it)
        if made and name:
            raise UsageError(
                f"{', '.join(made)}: trained with --profile {name}; add --profile {name} to {doing_it} as "
                f"{was} made ({because.format(it=it)}), or `genzoo train` {it} with these params"
            )
        if made:
            raise UsageError(
                f"{', '.join(made)}: trained with no --profile; {doing_it} without --profile {profile}, "
                f"as {was} made (or `genzoo train` {it} with these params)"
            )


def unmeasured(filters: dict[str, Any]) -> str | None:
    """Why a recipe's lift at one real fraction measures nothing of its generator, or None
    (``filters``: its usefulness.json filter counts, summed over subsets and seeds): a pool
    left empty (its classifier saw real data alone) or a class with no synthetic image left
    (the pool's balance not the recipe's)."""
    if filters.get("empty_pools"):
        return f"the filters left {filters['empty_pools']} pool(s) without a synthetic image"
    if filters.get("emptied"):
        return f"the filters left classes {', '.join(map(str, filters['emptied']))} without a synthetic image"
    return None
