"""Reliability figures (README, "Reliability"): real processes, real services, each drill counted.

    python bench/reliability.py                              # everything, the default counts
    python bench/reliability.py --pipeline-runs 5 --only pipeline,sockets

Drills (``--only`` picks some):

- ``kills``: 100 SIGKILLs of a process writing checkpoints (case 3: the newest checkpoint
  always loads and verifies) and 5 SIGKILLs of a training at steps chosen ahead (case 1:
  steps lost per kill, the parameters after resuming against an uninterrupted run); the code
  is bench/kill_drill.py's.
- ``pipeline``: ``--pipeline-runs`` whole ``genzoo run``s, each in a fresh project (tiny
  params: GAN and VAE, evaluation, usefulness, dataset, report, sqlite MLflow), then one
  re-run with nothing changed: how many ended well, how long each took, and that the re-run
  trained nothing (case 12). Flakiness shows here.
- ``mlflow``: 8 processes logging metric batches at once into one fresh sqlite store through
  genzoo's logger (case 16): rows expected, rows landed, errors.
- ``sockets``: genzoo's private local Ray started as ``genzoo run`` starts it (case 23): every
  listening socket of its processes, how many are off loopback.
- ``bad-inputs``: the ``genzoo`` console script given bad params, data and environments
  (cases 19-22): exit code and the line it printed, per input.

Prints one JSON line per drill, then a table. Services bind 127.0.0.1; nothing else is
contacted.
"""

from __future__ import annotations

import argparse
import atexit
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import ROOT, machine  # noqa: E402
from kill_drill import train_drill, write_drill  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.conftest import tiny_params  # noqa: E402


def scratch(prefix: str) -> str:
    """A temporary folder for one drill, removed when the bench exits."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


GENZOO = str(Path(sys.executable).with_name("genzoo"))
DRILLS = ("kills", "pipeline", "mlflow", "sockets", "bad-inputs")


def _env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_HOME": str(home / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "RAY_USAGE_STATS_ENABLED": "0",
        "DVC_NO_ANALYTICS": "1",
    }


def _project(root: Path, steps: int = 60) -> Path:
    """A fresh project folder with tiny params (GAN and VAE, every stage after training)."""
    root.mkdir(parents=True, exist_ok=True)
    raw = tiny_params(Path("."), steps=steps, families=["gan", "vae"])
    raw["data"]["prepared_dir"] = "data/prepared"
    raw["run"].update(runs_dir="runs", checkpoints_dir="checkpoints", track=True)
    raw["augment"]["out_dir"] = "data/augment"
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return root


# ----------------------------------------------------------------------------- drills


def kills(args) -> dict:
    rng = random.Random(args.seed)
    return {
        "checkpoint_writes": write_drill(args.write_kills, rng),
        "trainings": train_drill(args.train_kills, 400, rng),
    }


def pipeline(args) -> dict:
    """Whole runs in fresh projects, then one re-run that must train nothing."""
    root = Path(scratch("genzoo-rel-pipeline-"))
    runs = []
    for i in range(args.pipeline_runs):
        proj = _project(root / f"p{i}")
        t0 = time.perf_counter()
        r = subprocess.run(
            [GENZOO, "run", "--no-dvc", "--json", "-q"],
            cwd=proj,
            env=_env(proj),
            capture_output=True,
            text=True,
            timeout=1800,
        )
        seconds = time.perf_counter() - t0
        ok = r.returncode == 0
        runs.append(
            {
                "ok": ok,
                "seconds": round(seconds, 1),
                "error": None if ok else (r.stderr.strip().splitlines() or ["?"])[-1][:200],
            }
        )
        print(
            f"  pipeline run {i + 1}/{args.pipeline_runs}: {'ok' if ok else 'FAILED'} in {seconds:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    again = None
    last = root / f"p{args.pipeline_runs - 1}"
    if runs and runs[-1]["ok"]:
        r = subprocess.run(
            [GENZOO, "run", "--no-dvc", "--json", "-q"],
            cwd=last,
            env=_env(last),
            capture_output=True,
            text=True,
            timeout=1800,
        )
        summary = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {}
        trained = summary.get("trained", {})
        again = {
            "ok": r.returncode == 0,
            "retrained": sorted(f for f, m in trained.items() if not m.get("cached")),
        }
    secs = [x["seconds"] for x in runs if x["ok"]]
    return {
        "runs": len(runs),
        "ok": sum(x["ok"] for x in runs),
        "failed": [x["error"] for x in runs if not x["ok"]],
        "median_seconds": statistics.median(secs) if secs else None,
        "rerun_with_nothing_changed": again,
    }


def _writer(uri: str, run_id: str, batches: int, metrics: int) -> None:
    os.environ["MLFLOW_TRACKING_URI"] = uri
    from genzoo.tasks.tracking import MlflowLogger, client

    logger = MlflowLogger(client(uri), run_id)
    for step in range(1, batches + 1):
        logger.on_log(step, {f"m{k}": float(step * k) for k in range(metrics)})


def mlflow(args, writers: int = 8, batches: int = 100, metrics: int = 5) -> dict:
    from genzoo.tasks.tracking import client, prepare_store, start_run

    uri = f"sqlite:///{scratch('genzoo-rel-mlflow-')}/mlflow.db"
    c = client(uri)
    exp = prepare_store(uri)  # the driver creates the store, as the pipeline does
    run_ids = [start_run(c, exp, f"writer-{i}").info.run_id for i in range(writers)]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(uri, rid, batches, metrics)) for rid in run_ids]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    landed = sum(len(c.get_metric_history(rid, f"m{k}")) for rid in run_ids for k in range(metrics))
    return {
        "writers": writers,
        "rows_expected": writers * batches * metrics,
        "rows_landed": landed,
        "writers_failed": sum(p.exitcode != 0 for p in procs),
        "seconds": round(time.perf_counter() - t0, 1),
    }


SOCKETS = """
import json, sys, time, psutil, ipaddress
from genzoo.flows.cluster import connected
from genzoo.tasks.config import validate

def loop(a):
    ip = ipaddress.ip_address(a.split("%")[0])
    ip = ip.ipv4_mapped or ip if isinstance(ip, ipaddress.IPv6Address) else ip
    return ip.is_loopback

with connected(validate({"models": {"vae": {}}, "ray": {"num_cpus": 1}})) as ray:
    ray.get(ray.remote(lambda: 1).remote())
    time.sleep(5)  # the autoscaler monitor opens its metrics port a moment later
    me = psutil.Process()
    rows = set()
    for p in [me, *me.children(recursive=True)]:
        try:
            rows |= {(c.laddr.ip, c.laddr.port, p.name()) for c in p.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:
            pass
    off = sorted(r for r in rows if not loop(r[0]))
    print(json.dumps({"listening": len(rows), "off_loopback": len(off), "off": off,
                      "processes": sorted({r[2] for r in rows})}))
"""


def sockets(args) -> dict:
    home = Path(scratch("genzoo-rel-sockets-"))
    env = {**_env(home), "HOME": str(home)}
    r = subprocess.run([sys.executable, "-c", SOCKETS], env=env, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1][:300]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def bad_inputs(args) -> dict:
    """Each bad input through the real console script: exit code and the line it printed."""
    work = Path(scratch("genzoo-rel-bad-"))
    proj = _project(work / "proj")
    good = proj / "params.yaml"
    (work / "list.yaml").write_text("- a\n- b\n")
    np.savez(
        work / "levels.npz",
        images=np.zeros((20, 8, 8), np.uint8),
        labels=np.arange(20) % 2,
        levels=np.array([17, 17]),
    )
    (work / "notzip.npz").write_bytes(b"not a zip file at all")
    (work / "notes").mkdir()
    (work / "notes" / "mine.txt").write_text("a user's notes")
    p = ["--params", str(good)]
    cases = {
        "params file is a list": ["prepare", "--params", str(work / "list.yaml")],
        "override not YAML": ["prepare", *p, "-o", "seed=[1"],
        "output under a file": ["prepare", *p, "-o", "data.prepared_dir=/dev/null/x"],
        "lr 1e39": ["prepare", *p, "-o", "train.lr=1e39"],
        "seed 1e23": ["prepare", *p, "-o", "seed=1e23"],
        "image size too large": ["prepare", *p, "-o", "data.image_size=[100000, 100000]"],
        "npz levels an array": ["prepare", *p, "-o", f"data.source=npz:{work / 'levels.npz'}"],
        "npz not a zip": ["prepare", *p, "-o", f"data.source=npz:{work / 'notzip.npz'}"],
        "unknown family": ["train", *p, "--family", "nope"],
        "prepared_dir a user's folder": ["prepare", *p, "-o", f"data.prepared_dir={work / 'notes'}"],
        "run.device=cuda without CUDA": ["train", *p, "--family", "vae", "-o", "run.device=cuda"],
        "model not trained": ["sample", *p, "--family", "vae", "--out", str(work / "s")],
        "registered version missing": ["sample", *p, "--model", "models:/vae/99", "--out", str(work / "s")],
        "tracking server unreachable": ["run", *p, "--no-dvc"],
    }
    out = {}
    for name, argv in cases.items():
        env = _env(proj)
        if name == "tracking server unreachable":
            env["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:9"  # discard port: nothing listens
        if name == "run.device=cuda without CUDA":
            subprocess.run([GENZOO, "prepare", *p], cwd=proj, env=env, capture_output=True, timeout=300)
        r = subprocess.run([GENZOO, *argv], cwd=proj, env=env, capture_output=True, text=True, timeout=600)
        lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
        out[name] = {
            "exit": r.returncode,
            "traceback": "Traceback (most recent call last)" in r.stderr,
            "line": (lines[-1] if lines else "")[:160],
        }
    out["notes kept"] = {
        "exit": 0,
        "traceback": False,
        "line": str((work / "notes" / "mine.txt").read_text() == "a user's notes"),
    }
    return out


# ----------------------------------------------------------------------------- report


def table(results: dict) -> None:
    print(f"\nreliability drills on {machine()}\n")
    if "kills" in results:
        w, t = results["kills"]["checkpoint_writes"], results["kills"]["trainings"]
        print(
            f"checkpoint writes SIGKILLed: {w['kills']}; newest loaded and verified "
            f"{w['loaded_and_verified']}, "
            f"wrong or partial {w['wrong_or_partial']}, none yet {w['no_checkpoint_yet']}"
        )
        print(
            f"trainings SIGKILLed: {t['kills']} at steps {t['killed_at_steps']}; steps lost per kill "
            f"{t['lost_steps_per_kill']}; resumed from {t['final_run_resumed_from']}; "
            f"max |dtheta| vs uninterrupted {t['max_abs_param_diff_vs_uninterrupted']:.3g}"
        )
    if "pipeline" in results:
        p = results["pipeline"]
        print(
            f"genzoo run in fresh projects: {p['ok']}/{p['runs']} ended well, "
            f"median {p['median_seconds']} s; "
            f"re-run with nothing changed: {p['rerun_with_nothing_changed']}; failures: {p['failed']}"
        )
    if "mlflow" in results:
        m = results["mlflow"]
        print(
            f"MLflow, {m['writers']} writers at once into one sqlite store: {m['rows_landed']}/"
            f"{m['rows_expected']} metric rows landed, {m['writers_failed']} writers failed"
        )
    if "sockets" in results:
        s = results["sockets"]
        print(
            f"local Ray sockets: {s.get('listening')} listening, {s.get('off_loopback')} off loopback "
            f"{s.get('off') or ''}{s.get('error', '')}"
        )
    if "bad-inputs" in results:
        print("\n| bad input | exit | traceback | what it printed |\n|---|---|---|---|")
        for name, r in results["bad-inputs"].items():
            print(f"| {name} | {r['exit']} | {'yes' if r['traceback'] else 'no'} | `{r['line']}` |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(DRILLS), help=f"comma-separated drills ({', '.join(DRILLS)})")
    ap.add_argument("--write-kills", type=int, default=100)
    ap.add_argument("--train-kills", type=int, default=5)
    ap.add_argument("--pipeline-runs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    chosen = [d.strip() for d in args.only.split(",") if d.strip()]
    unknown = set(chosen) - set(DRILLS)
    if unknown:
        ap.error(f"--only: unknown drills {sorted(unknown)}; known: {', '.join(DRILLS)}")
    run = {
        "kills": kills,
        "pipeline": pipeline,
        "mlflow": mlflow,
        "sockets": sockets,
        "bad-inputs": bad_inputs,
    }
    results = {}
    for name in chosen:
        t0 = time.perf_counter()
        results[name] = run[name](args)
        print(json.dumps({name: results[name], "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    table(results)


if __name__ == "__main__":
    main()
