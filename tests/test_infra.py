"""The deployment configurations under infra/: each parses and has the keys and structure it needs.

No network, no docker, no cloud: these check the files (and the Ray launcher config against the
JSON schema of the installed Ray, prefect.yaml against Prefect's model, the DVC remote against
DVC's config schema), not that a cluster comes up.
"""

from __future__ import annotations

import ast
import configparser
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"

# The only flow parameters a deployment may set: which params file, families, overrides and profile.
# Hyper-parameters live in params.yaml.
DEPLOYMENT_PARAMETERS = {"params_file", "families", "overrides", "profile"}


def load(rel: str) -> Any:
    return yaml.safe_load((INFRA / rel).read_text())


def load_all(rel: str) -> list[Any]:
    return [d for d in yaml.safe_load_all((INFRA / rel).read_text()) if d is not None]


# ----------------------------------------------------------------------------- Ray cluster launcher


def launcher() -> dict:
    return load("ray/cluster.yaml")


def _commands(cfg: dict, key: str) -> list[str]:
    cmds = cfg.get(key)
    assert isinstance(cmds, list) and cmds, f"cluster.yaml: {key} missing or empty"
    assert all(isinstance(c, str) for c in cmds), f"cluster.yaml: {key} must be strings"
    return cmds


def _ray_pin(cfg: dict) -> str:
    found = {m for c in _commands(cfg, "setup_commands") for m in re.findall(r"ray\[[^\]]*\]==([\w.]+)", c)}
    assert len(found) == 1, f"cluster.yaml: setup_commands must pin one Ray version, found {found}"
    return found.pop()


def test_ray_launcher_required_keys():
    cfg = launcher()
    assert isinstance(cfg.get("cluster_name"), str) and cfg["cluster_name"]
    assert cfg["provider"]["type"] in {"aws", "gcp", "azure"}
    assert cfg["provider"].get("region"), "provider.region missing"
    assert isinstance(cfg.get("max_workers"), int) and not isinstance(cfg["max_workers"], bool)
    assert isinstance(cfg["auth"].get("ssh_user"), str)
    types = cfg["available_node_types"]
    assert isinstance(types, dict) and types
    assert cfg["head_node_type"] in types
    for name, spec in types.items():
        assert isinstance(spec.get("node_config"), dict) and spec["node_config"], f"{name}: node_config"
        assert isinstance(spec.get("resources"), dict), f"{name}: resources"
    assert sum(t.get("min_workers", 0) for t in types.values()) <= cfg["max_workers"]


def test_ray_launcher_has_a_gpu_worker_type_kept_up():
    cfg = launcher()
    types = cfg["available_node_types"]
    gpu = {n: t for n, t in types.items() if t["resources"].get("GPU", 0) >= 1 and n != cfg["head_node_type"]}
    assert gpu, "no worker node type with resources GPU >= 1"
    # genzoo checks that a live node can hold each task before it submits: it does not wait for
    # the autoscaler to start a GPU node from zero
    assert any(t.get("min_workers", 0) >= 1 for t in gpu.values()), "a GPU node type needs min_workers >= 1"
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head node type is the CPU one"


def test_ray_launcher_matches_rays_schema():
    import jsonschema  # installed with prefect
    import ray

    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    jsonschema.validate(launcher(), json.loads(schema_path.read_text()))


def test_ray_launcher_start_commands_are_secure():
    cfg = launcher()
    head = _commands(cfg, "head_start_ray_commands")
    starts = [c for c in head if "ray start" in c and "--head" in c]
    assert len(starts) == 1, "head_start_ray_commands: one `ray start --head`"
    stop = re.compile(r"^(~/venv/bin/)?ray stop$")
    assert any(stop.match(c.strip()) for c in head[: head.index(starts[0])]), "`ray stop` before start"
    hosts = re.findall(r"--dashboard-host[= ](\S+)", starts[0])
    assert hosts == ["127.0.0.1"], f"dashboard must listen on 127.0.0.1 only, got {hosts}"
    workers = _commands(cfg, "worker_start_ray_commands")
    wstarts = [c for c in workers if "ray start" in c]
    assert wstarts and all("--address=" in c for c in wstarts)
    assert any(stop.match(c.strip()) for c in workers[: workers.index(wstarts[0])])
    for c in (*starts, *wstarts):
        assert "RAY_AUTH_MODE=token" in c, f"token authentication off in: {c}"
        assert "0.0.0.0" not in c
    assert any(p.endswith(".ray/auth_token") for p in cfg["file_mounts"]), "the auth token is not copied"


def test_ray_launcher_installs_genzoo_and_mounts_shared_storage():
    cfg = launcher()
    setup = " && ".join(_commands(cfg, "setup_commands"))
    assert re.search(r"pip install [^&;]*-e ~/genzoo", setup), "setup_commands must install genzoo"
    assert "~/genzoo" in cfg["file_mounts"], "the checkout is not copied to the nodes"
    # Ray's default AMI is Ubuntu 18.04, older than torch's wheels: each node type names its own
    for name, node in cfg["available_node_types"].items():
        assert node["node_config"].get("ImageId", "").startswith("ami-"), f"{name}: no ImageId"
    # a venv (PEP 668 refuses system pip on Ubuntu 22.04+), torch pinned, every Ray command from it
    assert "python3 -m venv ~/venv" in setup and '~/venv/bin/python -m pip install -q "torch==' in setup
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert all("~/venv/bin/ray" in c for c in _commands(cfg, key) if re.search(r"\bray (start|stop)", c))
    # every command is whole shell (a ` #` in a plain YAML scalar cut one short: `ray up` failed)
    for key in ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands"):  # fmt: skip
        for c in cfg.get(key) or []:
            r = subprocess.run(["bash", "-n", "-c", c], capture_output=True, text=True)
            assert r.returncode == 0, f"cluster.yaml {key}: {c!r}: {r.stderr}"
    # bind mounts, not links: `genzoo serve` refuses paths that resolve outside the checkout
    assert "mount --bind /mnt/genzoo/$d ~/genzoo/$d" in setup and "ln -s" not in setup
    _ray_pin(cfg)
    for folder in ("runs", "checkpoints", "data/prepared"):
        assert f"/mnt/genzoo/{folder}" in setup, f"{folder} is not on the shared mount"


# ----------------------------------------------------------------------------- KubeRay


def kuberay() -> tuple[dict, list[dict]]:
    docs = load_all("ray/raycluster.yaml")
    clusters = [d for d in docs if d.get("kind") == "RayCluster"]
    assert len(clusters) == 1, "raycluster.yaml: one RayCluster"
    return clusters[0], docs


def _pod_specs(rc: dict) -> dict[str, dict]:
    spec = rc["spec"]
    pods = {"head": spec["headGroupSpec"]["template"]["spec"]}
    for g in spec["workerGroupSpecs"]:
        pods[g["groupName"]] = g["template"]["spec"]
    return pods


def test_kuberay_required_keys():
    rc, _ = kuberay()
    assert rc["apiVersion"] == "ray.io/v1"
    assert rc["metadata"]["name"]
    spec = rc["spec"]
    assert spec["authOptions"]["mode"] == "token", "Ray token authentication off"
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert head["rayStartParams"].get("dashboard-host") == "127.0.0.1"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", "the head service must not be exposed"
    container = head["template"]["spec"]["containers"][0]
    assert isinstance(container.get("image"), str) and container["image"]
    assert container["resources"]["limits"], "head container without resource limits"
    groups = spec["workerGroupSpecs"]
    assert isinstance(groups, list) and groups
    for g in groups:
        assert g["groupName"]
        assert 0 <= g["minReplicas"] <= g["maxReplicas"], f"{g['groupName']}: min/max replicas"
        # KubeRay's rayStartParams is map[string]string: unquoted numbers are rejected
        assert all(isinstance(v, str) for v in g["rayStartParams"].values()), f"{g['groupName']}: strings"
        assert g["template"]["spec"]["containers"][0]["image"]


def test_kuberay_has_a_gpu_group_kept_up():
    rc, _ = kuberay()
    gpu = [
        g
        for g in rc["spec"]["workerGroupSpecs"]
        if int(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1
    ]
    assert gpu, "no worker group with an nvidia.com/gpu limit"
    for g in gpu:
        limit = int(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
        assert g["rayStartParams"].get("num-gpus") == str(limit), f"{g['groupName']}: num-gpus"
    assert any(g["minReplicas"] >= 1 for g in gpu), "a GPU group needs minReplicas >= 1"


def test_kuberay_every_pod_mounts_the_shared_volume_at_one_path():
    rc, docs = kuberay()
    pvcs = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "PersistentVolumeClaim"}
    paths = set()
    for name, pod in _pod_specs(rc).items():
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod.get("volumes", [])
            if "persistentVolumeClaim" in v
        }
        assert claims, f"{name}: no PVC volume"
        for claim in claims.values():
            assert claim in pvcs, f"{name}: claim {claim} not defined in raycluster.yaml"
            assert "ReadWriteMany" in pvcs[claim]["spec"]["accessModes"], f"{claim}: not ReadWriteMany"
        mounts = [m for m in pod["containers"][0].get("volumeMounts", []) if m["name"] in claims]
        assert mounts, f"{name}: the shared volume is not mounted"
        paths.update(m["mountPath"] for m in mounts)
    assert len(paths) == 1, f"the shared volume must be at one path in every pod, got {paths}"


def test_the_image_copies_every_folder_the_package_is_built_from():
    """The Dockerfile copied models, metrics, tasks and flows but not genzoo/: `pip install .` in
    the build failed (package directory 'genzoo' does not exist)."""
    import tomllib

    dockerfile = (INFRA / "ray" / "Dockerfile").read_text()
    copied = {m.group(1) for m in re.finditer(r"^COPY --chown=\S+ (\S+) \./\1$", dockerfile, re.M)}
    folders = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    )
    assert folders <= copied, f"infra/ray/Dockerfile does not copy {sorted(folders - copied)}"


def test_ray_versions_agree():
    rc, _ = kuberay()
    dockerfile = (INFRA / "ray" / "Dockerfile").read_text()
    arg = re.search(r"^ARG RAY_VERSION=(\S+)", dockerfile, re.M)
    assert arg, "infra/ray/Dockerfile: ARG RAY_VERSION missing"
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}", dockerfile, re.M)
    assert rc["spec"]["rayVersion"] == arg.group(1) == _ray_pin(launcher())


def test_the_cluster_installs_the_torch_the_makefile_pins():
    """`pip install .` in the image and on the launcher's nodes took whatever torch PyPI had
    newest; both now pin the Makefile's TORCH_SPEC, and the image has DVC's S3 plugin."""
    spec = re.search(r"^TORCH_SPEC \?= (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    dockerfile = (INFRA / "ray" / "Dockerfile").read_text()
    assert f"ARG TORCH_SPEC={spec}" in dockerfile and '"${TORCH_SPEC}" .' in dockerfile
    assert '"dvc[s3]"' in dockerfile
    setup = " && ".join(_commands(launcher(), "setup_commands"))
    assert f'pip install -q "{spec}" -e ~/genzoo' in setup


# ----------------------------------------------------------------------------- Prefect


def prefect_yaml() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def _flow_functions(path: Path) -> dict[str, list[str]]:
    """Functions decorated with @flow / @flow(...) in ``path`` -> their parameter names."""
    tree = ast.parse(path.read_text())
    out = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for dec in node.decorator_list:
            target = dec.func if isinstance(dec, ast.Call) else dec
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
            if name == "flow":
                a = node.args
                out[node.name] = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    return out


def test_prefect_deployments():
    cfg = prefect_yaml()
    deployments = cfg["deployments"]
    assert isinstance(deployments, list) and deployments
    entrypoints = []
    for d in deployments:
        assert isinstance(d.get("name"), str) and d["name"], "deployment without a name"
        file, _, func = d["entrypoint"].partition(":")
        assert file.endswith(".py") and func, f"{d['entrypoint']}: not file.py:function"
        path = ROOT / file
        assert path.is_file(), f"{d['entrypoint']}: {file} not in the repository"
        flows = _flow_functions(path)
        assert func in flows, f"{d['entrypoint']}: no @flow function {func} in {file}"
        params = d.get("parameters") or {}
        extra = set(params) - DEPLOYMENT_PARAMETERS
        assert not extra, f"{d['entrypoint']}: hyper-parameters belong in params.yaml, not {sorted(extra)}"
        assert set(params) <= set(flows[func]), f"{d['entrypoint']}: parameters the flow does not take"
        assert d["work_pool"]["name"] == "genzoo"
        entrypoints.append(d["entrypoint"])
    assert {"flows/pipeline.py:pipeline", "flows/pipeline.py:train_one"} <= set(entrypoints)
    # a deployment is known as <flow name>/<name>: one per (entrypoint, name)
    assert len({(d["entrypoint"], d["name"]) for d in deployments}) == len(deployments)


def test_prefect_pull_step_sets_the_working_directory():
    steps = prefect_yaml()["pull"]
    assert isinstance(steps, list)
    key = "prefect.deployments.steps.set_working_directory"
    wd = [step[key] for step in steps if isinstance(step, dict) and key in step]
    assert wd and wd[0].get("directory"), "pull: set_working_directory with a directory"


def test_prefect_yaml_matches_prefects_model():
    from prefect.cli.deploy import _models as models

    parsed = models.PrefectYamlModel.model_validate(prefect_yaml())
    assert len(parsed.deployments) == len(prefect_yaml()["deployments"])
    assert all(d.work_pool and d.work_pool.name for d in parsed.deployments)


def test_work_pool_script_creates_the_process_pool_and_deploys():
    script = (INFRA / "prefect" / "work-pool.sh").read_text()
    pools = {d["work_pool"]["name"] for d in prefect_yaml()["deployments"]}
    for pool in pools:
        assert re.search(rf"work-pool create {pool} --type process\b", script), f"pool {pool} not created"
    assert "deploy --prefect-file prefect.yaml" in script
    assert script.startswith("#!") and "set -euo pipefail" in script


# ----------------------------------------------------------------------------- MLflow (docker compose)


def compose() -> dict:
    return load("mlflow/docker-compose.yaml")


def _published(port: Any) -> tuple[str, str]:
    """(host ip, whole entry) of one `ports:` entry, short or long syntax."""
    if isinstance(port, dict):
        return str(port.get("host_ip", "")), str(port)
    return str(port), str(port)


def test_compose_services():
    c = compose()
    assert "version" not in c, "the top-level `version` is obsolete in the Compose spec"
    services = c["services"]
    assert {"mlflow", "postgres", "minio"} <= set(services)
    assert str(services["postgres"]["image"]).startswith("postgres:16")
    assert services["postgres"]["healthcheck"]["test"]
    mlflow = services["mlflow"]
    assert mlflow.get("image") or mlflow.get("build")
    cmd = mlflow["command"]
    cmd = " ".join(map(str, cmd)) if isinstance(cmd, list) else str(cmd)
    assert "mlflow server" in cmd
    assert re.search(r"--backend-store-uri\s+postgresql(\+psycopg2)?://", cmd), "backend store not postgres"
    assert re.search(r"--artifacts-destination\s+s3://", cmd), "artifacts not on s3"
    assert mlflow["environment"].get("MLFLOW_S3_ENDPOINT_URL"), "MLflow does not know the S3 endpoint"
    # the host names clients may use (MLflow 3 refuses others with a 403): from the .env, empty by default
    assert mlflow["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"] == "${MLFLOW_SERVER_ALLOWED_HOSTS:-}"
    # its login app (--app-name basic-auth) needs mlflow's [auth] extra in the image
    assert '"mlflow[auth]==${MLFLOW_VERSION}"' in (INFRA / "mlflow" / "Dockerfile").read_text()
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    buckets = [
        n
        for n, s in services.items()
        if "mc mb" in json.dumps(s.get("command", "")) and "minio" in (s.get("depends_on") or {})
    ]
    assert buckets, "no one-shot service creating the buckets"
    assert mlflow["depends_on"][buckets[0]]["condition"] == "service_completed_successfully"


def test_compose_publishes_on_loopback_only():
    services = compose()["services"]
    published = [(n, p) for n, s in services.items() for p in s.get("ports", [])]
    assert published, "nothing published"
    for name, port in published:
        host, entry = _published(port)
        assert host.startswith("127.0.0.1"), f"{name}: {entry} is not bound to 127.0.0.1"
    assert any(_published(p)[1] == "127.0.0.1:5000:5000" for p in services["mlflow"].get("ports", []))
    assert "ports" not in services["postgres"], "postgres needs no published port"


def test_compose_credentials_come_from_the_environment_and_no_password_has_a_default():
    """Every password is ``${VAR:?message}``: compose refuses to start while it is unset or empty
    (no working default password); the user name may default."""
    services = compose()["services"]
    passwords = {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "AWS_SECRET_ACCESS_KEY"}
    seen = set()
    for name, s in services.items():
        env = s.get("environment") or {}
        assert isinstance(env, dict), f"{name}: environment as a mapping"
        for key in passwords & set(env):
            assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", str(env[key])), f"{name}: {key} has a default"
            seen.add(key)
        if "MINIO_ROOT_USER" in env:
            assert re.fullmatch(r"\$\{MINIO_ROOT_USER(:-\w+)?\}", str(env["MINIO_ROOT_USER"])), name
    assert passwords <= seen
    text = (INFRA / "mlflow" / "docker-compose.yaml").read_text()
    # no password anywhere falls back to a value: every use of a *PASSWORD variable demands it
    uses = re.findall(r"(?<!\$)\$\{(\w*PASSWORD)([^}]*)\}", text)  # $${...}: the container's shell
    assert uses and all(rest.startswith(":?") for _, rest in uses), uses
    assert "change-me" not in text


# ----------------------------------------------------------------------------- DVC remote


def test_dvc_remote_on_object_storage():
    path = INFRA / "dvc" / "remote-s3.config"
    cp = configparser.ConfigParser()
    cp.read_string(path.read_text())
    remotes = {m.group(1): cp[s] for s in cp.sections() if (m := re.fullmatch(r"""'?remote "(.+)"'?""", s))}
    s3 = {name: sec for name, sec in remotes.items() if sec.get("url", "").startswith("s3://")}
    assert s3, "no remote with an s3:// url"
    for name, sec in s3.items():
        assert sec.get("endpointurl"), f"remote {name}: endpointurl (MinIO) missing"
        leaked = {"access_key_id", "secret_access_key", "session_token"} & set(sec)
        assert not leaked, f"remote {name}: credentials belong in .dvc/config.local, not {leaked}"
    assert cp["core"]["remote"] in s3, "the s3 remote is not the default"


def test_dvc_remote_matches_dvcs_config_schema():
    pytest.importorskip("dvc")
    from dvc.config import Config

    conf = Config.validate(Config.load_file(str(INFRA / "dvc" / "remote-s3.config")))
    assert any(r["url"].startswith("s3://") for r in conf["remote"].values())


# ----------------------------------------------------------------------------- README


def test_readme_mentions_every_file_and_how_to_connect():
    readme = (INFRA / "README.md").read_text()
    files = [
        f"infra/{p.relative_to(INFRA).as_posix()}"
        for p in sorted(INFRA.rglob("*"))
        if p.is_file()
        and p.name != "README.md"
        and "__pycache__" not in p.parts
        and not p.name.startswith(".")
    ]
    assert files
    missing = [f for f in files if f not in readme]
    assert not missing, f"infra/README.md does not mention {missing}"
    for needed in (
        "RAY_ADDRESS",
        "--ray-address",
        "RAY_AUTH_MODE=token",
        "MLFLOW_TRACKING_URI=http://127.0.0.1:5000",
        "dvc remote add --local -d storage s3://",
        "dvc remote modify --local",
        'pip install "dvc[s3]"',
        "prefect work-pool create genzoo --type process",
        "prefect worker start --pool genzoo",
    ):
        assert needed in readme, f"infra/README.md: {needed!r} missing"


def test_make_install_with_extras_keeps_the_installed_torch(tmp_path):
    """`make install EXTRAS=vision`: the extra is installed with torch pinned to the build the
    venv has (a bare `pip install '.[vision]'` swaps it for the newest torch), and it has a stamp
    of its own, so it runs after a plain install."""
    import subprocess

    def recipe(*args: str) -> str:
        r = subprocess.run(["make", "-n", "install", f"VENV={tmp_path / 'venv'}", *args], cwd=ROOT,
                           capture_output=True, text=True, check=True)  # fmt: skip
        return r.stdout

    plain, vision = recipe(), recipe("EXTRAS=vision,hf")
    python = tmp_path / "venv" / "bin" / "python"
    pin = f"\"torch==$({python} -W ignore -c 'import torch; print(torch.__version__)')\""
    assert '-e ".[dev]"' in plain and pin in plain.replace("\\\n  ", "")
    assert '-e ".[dev,vision,hf]"' in vision and pin in vision.replace("\\\n  ", "")
    assert f"touch {tmp_path / 'venv'}/.genzoo-installed\n" in plain
    assert f"touch {tmp_path / 'venv'}/.genzoo-installed-vision-hf\n" in vision


def test_make_install_stops_when_the_torchvision_it_installed_does_not_load(tmp_path):
    """PyPI's torchvision beside a +cpu torch installs without a word and then fails to import
    (`operator torchvision::nms does not exist`): `make install EXTRAS=vision` says so and
    leaves no stamp (a venv whose python imports torch but not torchvision stands in for it)."""
    import subprocess

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python"
    fake.write_text(
        "#!/bin/bash\n"
        'case "$*" in\n'
        '  *"import torchvision"*) echo "operator torchvision::nms does not exist" >&2; exit 1;;\n'
        '  *"print(torch.__version__)"*) echo 2.13.0+cpu;;\n'
        "esac\n"
        "exit 0\n"
    )
    fake.chmod(0o755)
    r = subprocess.run(["make", "install", f"VENV={venv}", "EXTRAS=vision"], cwd=ROOT, capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode != 0
    assert "torchvision was installed but does not load beside torch 2.13.0+cpu" in r.stdout + r.stderr
    assert '"GPU install"' in r.stdout + r.stderr and not list(venv.glob(".genzoo-installed*"))
    r = subprocess.run(["make", "install", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and (venv / ".genzoo-installed").exists(), r.stdout + r.stderr  # no vision asked
