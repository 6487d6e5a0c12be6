import atexit
import contextlib
import importlib.util
import logging.handlers
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from genzoo.flows.cli import PREFECT_DEFAULTS

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")


def _remove_own(folder: str, pid: int) -> None:
    """Remove ``folder`` (a temporary one this session made) at exit, in the process that made
    it only: a forked child exiting must not take the session's Prefect home with it."""
    if os.getpid() == pid:
        shutil.rmtree(folder, ignore_errors=True)


# Prefect: a private home (database, settings) per test session, no telemetry, and a patient
# start for the temporary server on a busy 2-core machine; Ray: no usage stats.
if "PREFECT_HOME" not in os.environ:  # removed when the session's process exits (~10 MB each)
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="genzoo-prefect-")
    atexit.register(_remove_own, os.environ["PREFECT_HOME"], os.getpid())
for _key, _value in PREFECT_DEFAULTS.items():  # what every genzoo command sets, before Prefect is imported
    os.environ.setdefault(_key, _value)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
torch.set_num_threads(min(2, torch.get_num_threads()))

# Small enough to run the contract on every family in seconds; big enough to be the real code.
TINY = {
    "pixelcnn": {"channels": 8, "layers": 3},
    "realnvp": {"hidden": 8, "couplings": 2, "blocks": 1},
    "vae": {"latent_dim": 4, "hidden": 8, "iwae_k": 4, "kl_warmup_steps": 0},
    "gan": {"latent_dim": 8, "hidden": 8},
    "ddpm": {"hidden": 8, "timesteps": 100, "sample_steps": 4, "bound_terms": 5},
}


@pytest.fixture(scope="session")
def tiny():
    return TINY


def prepared_other_data(params, folder: Path):
    """``params`` on other digit-like data (an npz of 100 random 8x8 images at 17 levels,
    written in ``folder``), prepared where ``params``' data was: a run on another folder."""
    import numpy as np

    from genzoo.tasks.prepare import prepare

    images = np.random.default_rng(0).integers(0, 17, (100, 8, 8), dtype=np.uint8)
    np.savez(folder / "other.npz", images=images, labels=np.arange(100) % 10, levels=17)
    other = params.model_copy(deep=True)
    other.data.source = f"npz:{folder / 'other.npz'}"
    prepare(other)
    return other


def tiny_params(tmp_path, steps: int = 30, families=None, useful: bool = False, detect: bool = False,
                **extra) -> dict:  # fmt: skip
    """A params dict for fast real runs, all outputs under tmp_path. The pipeline also measures
    the usefulness of the GAN's synthetic data (retrained on a 20% subset) with ``useful``, and
    runs the anomaly benchmark of PixelCNN and RealNVP with ``detect``; the tests about them ask."""
    families = families or list(TINY)
    return {
        "seed": 0,
        "data": {"prepared_dir": str(tmp_path / "prepared")},
        "train": {
            "steps": steps,
            "batch_size": 32,
            "warmup_steps": 0,
            "log_every": 5,
            "checkpoint_every": 10,
        },
        "run": {
            "runs_dir": str(tmp_path / "runs"),
            "checkpoints_dir": str(tmp_path / "ckpt"),
            "samples_per_class": 2,
            "track": False,  # tests that track set MLFLOW_TRACKING_URI and turn it on
        },
        "evaluate": {  # a small real evaluator, a few samples per class
            "samples_per_class": 4,
            "kid_subsets": 5,
            "kid_subset_size": 20,
            "seeds": 2,
            "latency_repeats": 2,
            "evaluator": {"steps": 20, "channels": 8, "feature_dim": 16},
            "baselines": {"kde_bandwidths": 5, "gmm_components": [1, 2]},
            "judges": {"pca_components": 10, "mlp_hidden": 32, "mlp_max_iter": 20, "lenet_steps": 60},
        },
        "augment": {
            "name": "synthetic",
            "per_class": 3,
            "out_dir": str(tmp_path / "augment"),
            "recipe": "plain",
            "reject_copies": True,
        },
        # dvc.yaml reads recipes, augment.recipe and augment.reject_copies
        "recipes": {"plain": {}, "teacher": {"teacher": True, "teacher_confidence": 0.9}},
        "detect": {"families": [f for f in ("pixelcnn", "realnvp") if f in families and detect]},
        "usefulness": {  # one generator retrained on a 20% subset, tiny classifiers
            "families": [f for f in ("gan",) if f in families and useful],
            "fractions": [0.2, 1.0],
            "recipes": ["plain", "teacher"],
            "classifiers": ["cnn", "logistic"],
            "seeds": 2,
            "cnn": {"steps": 10, "channels": 8, "feature_dim": 16},
        },
        "models": {
            f: {"net": dict(TINY[f]), "train": {"ema_decay": 0.9} if f in ("gan", "ddpm") else {}}
            for f in families
        },
        **extra,
    }


@pytest.fixture(autouse=True)
def restore_logging():
    """The CLI installs its console handler; give pytest's back afterwards. For every test: a
    handler left on the root logger writes to the stream pytest captured the test's stderr in,
    which is closed afterwards, so the next test in that worker to log (Prefect's flow-run
    lines) would fail with "I/O operation on closed file"."""
    import logging

    from genzoo.flows import cli

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {n: logging.getLogger(n).level for n in (*cli.CHATTY, "genzoo", "genzoo.cluster")}
    yield
    root.handlers[:], root.level = handlers, level
    for n, lv in levels.items():
        logging.getLogger(n).setLevel(lv)


def pytest_collection_modifyitems(config, items):
    """Modules marked slow first (a stable sort: each module's tests stay together and in
    order). With `make test`'s `--dist worksteal` the first worker starts on them while the
    others start on the short tests, then take slow ones from the end of its queue: the long
    end-to-end runs start early on one worker and are shared out as the others run dry
    (`--dist loadscope`, which starts them on every worker, measured no faster:
    bench/RESULTS.md, "The test suite's time")."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_unconfigure(config):
    # Prefect stops its temporary server at interpreter exit and logs it to a console pytest
    # has closed by then; that log line is not worth a traceback
    import logging

    logging.raiseExceptions = False


def make_dvc_repo(tmp_path, steps: int, families=None, useful: bool = False, detect: bool = False):
    """A fresh git + DVC repository holding genzoo's code and tiny params (default paths).
    Returns (repo, raw params, sh) where sh(*cmd) runs a command there and returns its output."""
    root = Path(__file__).resolve().parents[1]
    repo = tmp_path / "repo"
    repo.mkdir()
    for item in ("dvc.yaml", ".gitignore", "models", "tasks", "metrics", "flows", "data/raw/README.md"):
        src, dst = root / item, repo / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    raw = tiny_params(Path("."), steps=steps, families=families, useful=useful, detect=detect)
    raw["data"].update(prepared_dir="data/prepared", raw_dir="data/raw")  # dvc.yaml reads raw_dir
    raw["run"].update(runs_dir="runs", checkpoints_dir="checkpoints", threads=None, device="auto")
    raw["augment"]["out_dir"] = "data/augment"
    raw["ray"] = {"resources": {"default": {"num_cpus": 1, "num_gpus": 0}}}  # dvc.yaml reads both
    # dvc.yaml names the usefulness keys one by one: every one is in params.yaml, as in the shipped one
    from genzoo.tasks.config import UsefulnessParams

    raw["usefulness"] = {**UsefulnessParams().model_dump(mode="json"), **raw["usefulness"]}
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
    }

    def sh(*cmd):
        r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{' '.join(cmd)}:\n{r.stdout}\n{r.stderr}"
        return r.stdout + r.stderr

    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    return repo, raw, sh


@contextlib.contextmanager
def logged(name: str, level: int = logging.INFO):
    """The messages of ``level`` and above that logger ``name`` (and those below it) emits in the
    block, as a list filled at its end (caplog's handler is gone once Prefect was imported)."""
    logger = logging.getLogger(name)
    said, lines, was = logging.handlers.BufferingHandler(10_000), [], logger.level
    logger.addHandler(said)
    logger.setLevel(level)
    try:
        yield lines
    finally:
        logger.removeHandler(said)
        logger.setLevel(was)
        lines.extend(r.getMessage() for r in said.buffer)


# ----------------------------------------------------------------------------- processes


@contextlib.contextmanager
def lock_held(runs_dir: Path):
    """Another process holding the run lock on ``runs_dir`` as a running `genzoo run` does
    (``tasks/layout.py: exclusive``), from the moment it says so to the end of the block, where
    it is SIGKILLed (no cleanup runs: the OS frees the lock). Yields its ``Popen``."""
    code = "import time\nfrom genzoo.tasks.layout import exclusive\n"
    code += f"with exclusive({str(runs_dir)!r}):\n    print('held', flush=True)\n    time.sleep(600)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def descendants(root: int) -> list[int]:
    """Every process below ``root``, from /proc (parents first)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid, ppid = int(stat.parent.name), int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def own_processes(title: str, root: int | None = None) -> list[int]:
    """The processes this test process started (its descendants: the local Ray it runs and
    Ray's workers) whose command line holds ``title`` (a Ray task's ``ray::<name>``). Never
    a search of the whole machine: a user's genzoo training is not ours to signal."""
    found = []
    for pid in descendants(os.getpid() if root is None else root):
        with contextlib.suppress(OSError):
            if title in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace"
            ):
                found.append(pid)
    return found


# ----------------------------------------------------------------------------- bench scripts


def load_bench(name: str):
    """bench/NAME.py as a module, for the tests of the bench scripts (not a package: a script
    imports its siblings, e.g. families.py, from its own folder)."""
    folder = Path(__file__).resolve().parents[1] / "bench"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module
