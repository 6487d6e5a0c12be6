"""The fan-out relies on Ray starting tasks in the order they were submitted (longest chains
first, so that they do not start last and leave cores idle at the end), and on its stage tasks,
each in its own thread, submitting in that order (``cluster.InOrder``)."""

import time
from pathlib import Path

from genzoo.flows import cluster
from genzoo.tasks.config import load_params

ROOT = Path(__file__).resolve().parents[2]


def _stamp(i: int) -> tuple[int, float]:
    time.sleep(0.2)
    return i, time.time()


def test_tasks_start_in_submission_order_on_a_local_ray_that_keeps_the_callers_sigterm_handler():
    """Also: ray.init sets its own SIGTERM handler (sys.exit); the one the caller had (Prefect's,
    which makes a cancel from the UI a TerminationSignal and the run CANCELLED) is put back."""
    import signal

    def prefects(signum, frame):  # a stand-in for Prefect's handler: only its identity is checked
        raise AssertionError("no SIGTERM is sent")

    params = load_params(ROOT / "params.yaml", ["ray.num_cpus=1"])
    before = signal.signal(signal.SIGTERM, prefects)
    try:
        with cluster.connected(params) as ray:
            kept = signal.getsignal(signal.SIGTERM)
            families = ["vae", "gan", "ddpm", "pixelcnn", "realnvp", "vae", "gan", "ddpm"]
            refs = [cluster.submit(params, f, f"task-{i}", _stamp, i) for i, f in enumerate(families)]
            done = sorted(ray.get(refs), key=lambda r: r[1])  # one CPU: one task at a time
    finally:
        signal.signal(signal.SIGTERM, before)
    assert [i for i, _ in done] == list(range(len(families)))
    assert kept is prefects
    before = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a caller ignoring SIGTERM keeps ignoring it
    try:
        with cluster._sigterm_kept():
            signal.signal(signal.SIGTERM, lambda *_: None)  # as ray.init does (checked above, for real)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)


def test_turns_pass_in_the_listed_order_whatever_order_the_threads_come_in():
    import threading

    names = ["evaluator", "train-subsets-pixelcnn", "usefulness-reference", "train-pixelcnn", "train-gan"]
    order = cluster.InOrder(names, timeout_s=10)
    went: list[str] = []
    delays = dict(zip(names, [0.15, 0.2, 0.0, 0.05, 0.1], strict=True))  # the reference's thread comes first

    def stage(name: str) -> None:
        time.sleep(delays[name])  # each thread's own work before it submits
        with order.turn(name):
            went.append(name)

    threads = [threading.Thread(target=stage, args=(n,)) for n in reversed(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert went == names and order.passed == names


def test_a_turn_that_fails_or_is_skipped_lets_the_next_go_and_a_missing_one_only_delays_it():
    order = cluster.InOrder(["a", "b", "c"], timeout_s=0.3)
    try:
        with order.turn("a"):
            raise RuntimeError("a's submission failed")
    except RuntimeError:
        pass
    t0 = time.perf_counter()
    with order.turn("b"):  # a is done: b goes at once
        pass
    with order.turn("unlisted"):
        pass
    assert time.perf_counter() - t0 < 0.2
    order = cluster.InOrder(["a", "b"], timeout_s=0.3)
    t0 = time.perf_counter()
    with order.turn("b"):  # a never comes: b goes after the timeout
        pass
    assert 0.25 < time.perf_counter() - t0 < 5 and order.passed == ["b"]


def test_long_chains_are_submitted_first_ddpms_among_equal_steps(tmp_path):
    """With nothing measured, the most steps go first, and among equal steps DDPM (its evaluation
    draws each image in 2 x 20 DDIM passes): in a quick run every family trains 150 steps, and
    DDPM, submitted last, ran its evaluation alone at the end. A measured time decides after."""
    import json

    from genzoo.flows.pipeline import _longest_first

    quick = load_params(ROOT / "params.yaml", [f"run.runs_dir={tmp_path}"], profile="quick")
    families = ["pixelcnn", "realnvp", "vae", "gan", "ddpm"]
    assert _longest_first(quick, families, first=["vae"]) == ["vae", "gan", "ddpm", "pixelcnn", "realnvp"]
    (tmp_path / "realnvp").mkdir()
    (tmp_path / "realnvp" / "metrics.json").write_text(json.dumps({"train_seconds": 900.0}))
    assert _longest_first(quick, families)[0] == "realnvp"


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_a_run_leaving_its_ray_on_an_error_ends_the_waits_of_the_other_stages():
    """One stage's error unwinds the flow while another stage's thread waits on a long Ray
    task: the task is cancelled and the wait ends (Interrupted) before Ray shuts down. A thread
    still inside ``ray.wait`` as Ray shuts down never returned, and the flow's task runner
    waited on it for good (as an interrupted run did)."""
    import threading

    import pytest

    params = load_params(ROOT / "params.yaml", ["ray.num_cpus=1"])
    ended: dict[str, BaseException] = {}

    def wait(ref):
        try:
            cluster.get(ref, "vae")
        except BaseException as e:
            ended["by"] = e

    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="a stage's bug"), cluster.connected(params):
        waiter = threading.Thread(target=wait, args=(cluster.submit(params, "vae", "long", _sleep, 120),))
        waiter.start()
        time.sleep(1)
        raise RuntimeError("a stage's bug")
    waiter.join(30)
    assert not waiter.is_alive() and isinstance(ended["by"], cluster.Interrupted)
    assert time.monotonic() - t0 < 30
    assert not cluster.STOP.is_set()  # the stop ended with its run: a later cluster.submit works
    with cluster.connected(params) as ray:  # the next run in the process is not stopped by that one
        assert cluster.get(cluster.submit(params, "vae", "short", _sleep, 0.1), "vae") == 0.1
        assert ray.is_initialized()
