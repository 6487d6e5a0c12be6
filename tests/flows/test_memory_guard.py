"""Case 9: a task held to its memory budget by resident memory (no Ray), and a task that Ray's own
memory monitor kills failing with its family named instead of being re-run without end."""

import re

import pytest

from genzoo.flows import cluster


def _hog(chunks: list[bytearray], mb: int, times: int) -> int:
    """Touch ``times`` blocks of ``mb`` MB (pages written, so resident), in Python steps."""
    for _ in range(times):
        block = bytearray(mb * 2**20)  # zeroed pages, not yet resident
        block[:: 2**12] = b"\1" * (mb * 2**8)  # one byte per 4 KB page: all resident, no temporary copy
        chunks.append(block)
    return len(chunks)


def _over_budget(queue) -> None:
    """In a fresh process, as in a Ray worker of its own (``max_calls=1``): a test process's
    other threads (services, clients of earlier tests) would move its RSS too."""
    chunks: list[bytearray] = []
    try:  # would hold 2 GB; the budget is 150 MB
        cluster._on_node(_hog, None, chunks, 25, 80, memory=("vae", 150))
        queue.put(("returned", 0.0))
    except cluster.OutOfMemory as e:
        queue.put((str(e), sum(len(c) for c in chunks) / 2**20))


def test_a_task_past_its_budget_fails_with_the_family_and_limit_named():
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_over_budget, args=(queue,))
    proc.start()
    msg, held = queue.get(timeout=120)
    proc.join(30)
    assert msg.startswith("vae: ran out of memory: the task may use ray.resources.vae.memory_mb=150 MB"), msg
    reached = float(re.search(r"reached (\d+) MB", msg)[1])  # what the guard saw above the start
    assert 150 <= reached <= 400, msg  # stopped within a few polls of the budget, not at 2 GB
    # the guard raises at the task's next Python step after a poll saw the RSS over budget: the
    # block being written then may still be finished and kept (one 25 MB block past that poll)
    assert 150 - 25 <= held <= reached + 25, (held, msg)


def _cleanup_after_budget(queue) -> None:
    """A task past its budget whose ``finally`` takes a while (closing its MLflow run, say), in a
    fresh process (the test process's other threads would move its RSS); what the guard sent."""
    import ctypes
    import time

    real, sent = ctypes.pythonapi.PyThreadState_SetAsyncExc, []
    ctypes.pythonapi.PyThreadState_SetAsyncExc = lambda *a: sent.append(a) or real(*a)
    chunks: list[bytearray] = []
    done = []

    def task():
        try:
            _hog(chunks, 25, 80)
        finally:
            for _ in range(30):  # the memory still held: Python steps the guard could interrupt
                time.sleep(0.01)
            done.append("cleaned up")

    try:
        cluster._on_node(task, None, memory=("vae", 100))
    except cluster.OutOfMemory as e:
        done.append(str(e).split(":")[0])
    queue.put((done, len(sent)))


def test_the_guard_interrupts_a_task_once_and_lets_its_cleanup_run():
    """After the first interruption the guard raised again every 20 ms while the task unwound (its
    memory still held): a finally closing the MLflow run was cut short."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_cleanup_after_budget, args=(queue,))
    proc.start()
    assert queue.get(timeout=120) == (["cleaned up", "vae"], 1)
    proc.join(30)


def test_a_ray_task_given_no_gpu_runs_auto_on_the_cpu(monkeypatch):
    """Ray 2.60 no longer hides a node's GPUs from a task that asked for none: with `run.device:
    auto` every family of `num_gpus: 0` on a GPU node took cuda:0, reserved by another."""
    import ray
    import torch

    from genzoo.tasks.layout import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU node
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    for ids, device in (([], "cpu"), ([0], "cuda")):
        monkeypatch.setattr(ray, "get_gpu_ids", lambda ids=ids: ids)
        assert cluster._on_node(lambda: resolve_device("auto").type, None) == device
        assert cluster._on_node(lambda: resolve_device("auto").type, None, memory=("gan", 300)) == device
    assert resolve_device("auto").type == "cuda"  # outside a task: the GPU


def test_a_family_trains_where_its_resources_say_whichever_entry_point_runs_it(monkeypatch, tmp_path):
    """On a GPU machine `genzoo run` trained the default families (`num_gpus: 0`) on the CPU and
    `dvc repro`, outside Ray, on CUDA with bf16, and either called the other's models up to
    date: `auto` follows the family's resources everywhere, and a GPU model's key says so."""
    import torch

    from genzoo.tasks.config import ParamsError, validate
    from genzoo.tasks.layout import training_device
    from tests.conftest import tiny_params

    raw = tiny_params(tmp_path, steps=2, families=["gan", "vae"])
    raw["ray"] = {"resources": {"default": {"num_cpus": 1, "num_gpus": 0}, "vae": {"num_gpus": 0.5}}}
    params = validate(raw)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, outside Ray
    assert training_device(params, "gan").type == "cpu" and training_device(params, "vae").type == "cuda"
    assert "device" not in params.family_block("gan")  # the CPU's keys are as before
    assert params.family_block("vae")["device"] == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ParamsError, match=r"ray\.resources\.vae\.num_gpus=0\.5: vae asks for a GPU"):
        training_device(params, "vae")
    raw["ray"]["resources"] = {"default": {"num_cpus": 1, "num_gpus": 0.25}, "vae": {"num_cpus": 2}}
    with pytest.raises(ParamsError, match=r"ray\.resources\.default\.num_gpus=0\.25: vae asks"):  # its key
        training_device(validate(raw), "vae")
    cpu = validate({**raw, "run": {**raw["run"], "device": "cpu"}})
    assert training_device(cpu, "vae").type == "cpu" and "device" not in cpu.family_block("vae")


def test_a_task_within_its_budget_returns_its_result():
    chunks: list[bytearray] = []
    assert cluster._on_node(_hog, None, chunks, 10, 5, memory=("gan", 300)) == 5


def test_an_exception_of_the_task_passes_through_unchanged():
    def boom():
        raise ValueError("models.gan: bad")

    with pytest.raises(ValueError, match="models.gan: bad"):
        cluster._on_node(boom, None, memory=("gan", 300))


def test_a_task_killed_by_rays_memory_monitor_fails_with_the_family_named(tmp_path, monkeypatch):
    """Without ``memory_mb``, Ray's own memory monitor is what stops a task that the node cannot
    hold; Ray would re-run it without end by default (the run hangs). genzoo's local Ray re-runs it
    ``ray.max_retries`` times, then the family fails with :class:`OutOfMemory`, as case 9 asks.
    The monitor is made to see the node as full at once (a kill threshold of 0)."""
    import time

    from genzoo.tasks.config import validate
    from tests.conftest import tiny_params

    monkeypatch.setenv("RAY_memory_usage_threshold", "0")
    monkeypatch.setenv("RAY_memory_monitor_refresh_ms", "50")
    raw = tiny_params(tmp_path, families=["gan"])
    raw["ray"] = {"num_cpus": 1, "max_retries": 1}
    params = validate(raw)
    with cluster.connected(params) as ray:
        ref = cluster.submit(params, "gan", "train-gan", time.sleep, 60)
        done, _ = ray.wait([ref], timeout=90)  # Ray's default: re-run after every kill, never done
        assert done, "the killed task was re-run without end"
        with pytest.raises(cluster.OutOfMemory) as e:
            cluster.get(ref, "gan")
    assert str(e.value).startswith(
        "gan: killed by Ray's memory monitor, the node running short of memory (was "
    ), e.value
    assert "ray.resources.gan.memory_mb" in str(e.value), e.value
    assert isinstance(e.value.__cause__, ray.exceptions.OutOfMemoryError)
