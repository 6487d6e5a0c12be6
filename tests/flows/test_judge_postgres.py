"""``genzoo judge`` on a real PostgreSQL server, owned by this module: initdb into a temporary
folder, the server on a free port of 127.0.0.1 (no Unix socket), stopped and deleted afterwards,
with a check that no server process is left. The server binaries come from the ``pgserver``
wheel (the dev extra), else from a system PostgreSQL (``pg_ctl`` on PATH, Debian's
/usr/lib/postgresql/*/bin), or from ``GENZOO_PG_BINDIR``. As root the server runs as ``nobody``
(PostgreSQL refuses root), from a copy of the binaries when their folder is closed to it.

The same study is made, answered and scored on PostgreSQL and on SQLite through the same code:
the same images and orders, an answer sent twice stored once, two threads answering at once,
the same figures; and ``genzoo judge create`` / ``serve`` with a ``postgresql://`` URL answer a
rater's requests."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from genzoo.flows import cli
from genzoo.tasks import judge
from genzoo.tasks.config import validate
from genzoo.tasks.prepare import prepare
from genzoo.tasks.train import train_family
from tests.conftest import tiny_params
from tests.flows.test_judge import Server, _free_port

# ----------------------------------------------------------------------------- the server


def _bindir() -> Path:
    if os.environ.get("GENZOO_PG_BINDIR"):  # another PostgreSQL, e.g. the team's version
        return Path(os.environ["GENZOO_PG_BINDIR"])
    spec = importlib.util.find_spec("pgserver")
    if spec and spec.submodule_search_locations:
        b = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (b / "postgres").exists():
            return b
    found = shutil.which("pg_ctl")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for b in candidates:
        if all((b / x).exists() for x in ("initdb", "pg_ctl", "postgres")):
            return b
    pytest.fail(
        "no PostgreSQL server binaries: pip install -e '.[dev]' (pgserver ships them) "
        "or apt-get install postgresql"
    )


class Postgres:
    """A throwaway PostgreSQL server on 127.0.0.1:<free port>."""

    def __init__(self) -> None:
        self.bin = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="genzoo-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.user = "nobody" if os.geteuid() == 0 else None  # initdb and postgres refuse root
        self.port, self.pid = _free_port(), None
        self.env = {**os.environ, "HOME": str(self.root), "LC_ALL": "C", "LANG": "C"}
        if self.user:
            import pwd

            uid, gid = pwd.getpwnam(self.user).pw_uid, pwd.getpwnam(self.user).pw_gid
            os.chown(self.root, uid, gid)
            try:
                reachable = self._run([self.bin / "postgres", "--version"], check=False).returncode == 0
            except OSError:  # exec refused: a folder on the way is closed to that user
                reachable = False
            if not reachable:
                try:
                    self.bin = self._copy_binaries(self.root / "pg")
                except BaseException:
                    shutil.rmtree(self.root, ignore_errors=True)
                    raise

    def _copy_binaries(self, dest: Path) -> Path:
        """A copy of the binaries that the server's user can reach, with what their RPATH points
        at (the pgserver wheel's libraries lie beside its package: <site>/pgserver.libs)."""
        install = self.bin.parent
        parts = [(install, dest / install.parent.name / install.name)]
        libs = install.parent.parent / f"{install.parent.name}.libs"
        if libs.is_dir():
            parts.append((libs, dest / libs.name))
        for src, dst in parts:
            shutil.copytree(src, dst, symlinks=True)
        for d, _, files in os.walk(dest):
            os.chmod(d, 0o755)
            for f in files:
                p = Path(d, f)
                if not p.is_symlink():
                    p.chmod(p.stat().st_mode | 0o444)
        return parts[0][1] / "bin"

    def _run(self, cmd, check=True, timeout=120) -> subprocess.CompletedProcess:
        with tempfile.TemporaryFile("w+") as out:  # pg_ctl's server keeps a pipe open: a file
            r = subprocess.run(
                [str(c) for c in cmd],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                user=self.user,
                cwd=self.root,
                timeout=timeout,
                text=True,
            )
            out.seek(0)
            r.stdout = out.read()
        if check and r.returncode:
            log = self.log.read_text() if self.log.exists() else ""
            raise AssertionError(f"{' '.join(map(str, cmd))} failed:\n{r.stdout}\n{log}")
        return r

    def start(self) -> None:
        self._run([self.bin / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                   "--locale=C", "--no-sync"])  # fmt: skip
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' -F"
        self._run(
            [self.bin / "pg_ctl", "-D", self.data, "-l", self.log, "-o", opts, "-w", "-t", "120", "start"]
        )
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def url(self, database: str, driver: str = "") -> str:
        """A fresh database on the server; its URL (``postgresql://``: the driver genzoo picks)."""
        admin = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres")
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(sa.text(f'CREATE DATABASE "{database}"'))
        admin.dispose()
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        for url in [u for u in judge._engines if f"127.0.0.1:{self.port}/" in u]:
            judge._engines.pop(url).dispose()  # this process's pooled connections
        if self.pid is not None:
            self._run(
                [self.bin / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop"], check=False
            )
            deadline = time.monotonic() + 30
            while _alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(self.pid):  # never left behind
                os.kill(self.pid, 9)
                raise AssertionError(f"the PostgreSQL server {self.pid} did not stop; killed")
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def pg():
    server = Postgres()
    try:
        server.start()
        yield server
    finally:
        server.stop()
    assert not _alive(server.pid) and not server.root.exists()


# ----------------------------------------------------------------------------- the project


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Tiny GAN and VAE trained for a few steps; the params file the CLI and server read."""
    tmp = tmp_path_factory.mktemp("judge-pg")
    raw = tiny_params(tmp, steps=3, families=["gan", "vae"])
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw))
    params = validate(raw)
    prepare(params)
    for f in ("gan", "vae"):
        train_family(params, f, progress=False)
    return tmp, params


def _contents(url: str, study: str) -> dict:
    """The study as stored: its images in order, each rater's trials (items by their place)."""
    eng = judge.engine(url)
    with eng.connect() as c:
        sid = c.execute(sa.select(judge.studies.c.id).where(judge.studies.c.name == study)).scalar()
        items = c.execute(
            sa.select(judge.items.c.id, judge.items.c.kind, judge.items.c.family, judge.items.c.label,
                      judge.items.c.png).where(judge.items.c.study_id == sid).order_by(judge.items.c.id)
        ).all()  # fmt: skip
        place = {r.id: k for k, r in enumerate(items)}
        raters = c.execute(
            sa.select(judge.raters.c.id).where(judge.raters.c.study_id == sid).order_by(judge.raters.c.id)
        ).scalars()
        orders = []
        for rid in list(raters):
            ts = c.execute(
                sa.select(judge.trials)
                .where(judge.trials.c.rater_id == rid)
                .order_by(judge.trials.c.position)
            ).all()
            orders.append([(t.mode, place[t.item_a], place.get(t.item_b)) for t in ts])
    return {"items": [(r.kind, r.family, r.label, bytes(r.png)) for r in items], "orders": orders}


def _policy(k: int, position: int, mode: str, kind: str) -> str:
    """A rater's answer, fixed by rater, place and truth: the same study gets the same answers."""
    if mode == "pair":
        return "left" if (position + k) % 3 else "right"
    if kind == "attention":
        return "real" if k == 2 else "generated"  # the third rater fails the checks
    return "real" if (position * 7 + k) % 5 < 2 + (kind == "real") else "generated"


def _answer_all(url: str, tokens: list[str]) -> dict:
    """Every trial answered by ``_policy``; the first rater's again (a retry: nothing changes)
    and the second's by two threads at once. Returns what each call said was stored."""
    eng = judge.engine(url)
    said = {"first": [], "again": [], "together": []}
    for k, token in enumerate(tokens):
        rater = judge.rater_for(eng, token)
        with eng.connect() as c:
            ts = c.execute(
                sa.select(judge.trials.c.id, judge.trials.c.position, judge.trials.c.mode, judge.items.c.kind)
                .join(judge.items, judge.items.c.id == judge.trials.c.item_a)
                .where(judge.trials.c.rater_id == rater.id)
                .order_by(judge.trials.c.position)
            ).all()
        for t in ts:
            value = _policy(k, t.position, t.mode, t.kind)
            if k != 1:
                said["first"].append(judge.answer(eng, rater, t.id, value, 400 + t.position)["stored"])
                if k == 0:
                    said["again"].append(judge.answer(eng, rater, t.id, value, 1)["stored"])
                continue
            barrier, out = threading.Barrier(2), []

            def post(value=value, t=t, rater=rater, barrier=barrier, out=out):
                barrier.wait()
                out.append(judge.answer(eng, rater, t.id, value, 400 + t.position)["stored"])

            threads = [threading.Thread(target=post) for _ in range(2)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(60)
            said["together"].append(sorted(out))
    return said


def _rows(url: str) -> int:
    with judge.engine(url).connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(judge.answers)).scalar()


# ----------------------------------------------------------------------------- the tests


def test_a_study_on_postgres_is_the_same_study_as_on_sqlite(project, pg):
    tmp, params = project
    urls = {"sqlite": f"sqlite:///{tmp / 'parity.db'}", "postgresql": pg.url("parity")}
    got = {}
    for kind, url in urls.items():
        args = {"families": ["gan", "vae"], "per_family": 6, "attention": 2, "pairs": 3, "seed": 5}
        made = judge.create(params, url, judge.request(params, url, name="same", raters=3, **args))
        assert judge.engine(url).dialect.name == kind
        tokens = [r["token"] for r in made["raters"]]
        said = _answer_all(url, tokens)
        n = len(said["first"]) // 2  # raters 1 and 3 answered every trial once, then rater 1 again
        assert all(said["first"]) and said["again"] == [False] * n
        assert said["together"] == [[False, True]] * n  # two at once: one stored, one told not
        assert _rows(url) == 3 * n  # 20 images + 3 pairs per rater: one row per trial
        with pytest.raises(judge.StudyError, match="already exists"):
            judge.request(params, url, name="same", **args)
        figures = judge.results(params, url, "same", reps=300)
        assert figures.pop("created") > 0  # when each study was made: the one figure that differs
        got[kind] = (_contents(url, "same"), figures, said)
    assert got["postgresql"][0] == got["sqlite"][0]  # the same images, the same orders
    assert got["postgresql"][1] == got["sqlite"][1]  # the same figures, to the last digit
    fig = got["postgresql"][1]
    assert fig["raters"] == {"total": 3, "answered": 3, "included": 2, "excluded_attention": 1}
    assert fig["families"]["gan"]["error"] is not None and fig["pairwise"]["n"] == 2 * 3
    saved = json.loads(judge.results_path(params, "same").read_text())
    assert saved["families"] == json.loads(json.dumps(fig["families"]))


def test_judge_create_and_serve_on_postgres(project, pg, capsys, restore_logging):
    tmp, _ = project
    url = pg.url("served")  # postgresql://, no driver named: genzoo takes psycopg 3
    argv = ["judge", "create", "--params", str(tmp / "params.yaml"), "--db", url, "-q"]
    assert cli.main([*argv, "--name", "web", "--families", "gan", "--per-family", "3", "--raters", "2"]) == 0
    links = json.loads(capsys.readouterr().out)["raters"]
    token = links[0]["link"].rsplit("/", 1)[1]
    server = Server(tmp, url.replace("postgresql://", "postgresql+psycopg://"))
    server.start()
    try:
        with urllib.request.urlopen(f"{server.base}/r/{token}", timeout=30) as r:
            assert r.status == 200 and "web" in r.read().decode()
        with urllib.request.urlopen(f"{server.base}/api/{token}/next", timeout=30) as r:
            nxt = json.loads(r.read())
        assert nxt["done"] == 0 and nxt["total"] == 3 + 3 + 3  # reals, gan, attention
        with urllib.request.urlopen(f"{server.base}/img/{token}/{nxt['trial']['images'][0]}.png") as r:
            assert r.read().startswith(b"\x89PNG")
        body = json.dumps({"trial": nxt["trial"]["id"], "answer": "generated", "ms": 900}).encode()
        for expected in (True, False):  # a double click: stored once
            req = urllib.request.Request(
                f"{server.base}/api/{token}/answer", body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=30) as r:
                out = json.loads(r.read())
            assert out["stored"] is expected and out["done"] == 1
    finally:
        server.stop()
    eng = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with eng.connect() as c:
        rows = c.execute(
            sa.select(judge.answers.c.trial_id, judge.answers.c.answer, judge.answers.c.ms)
        ).all()
    eng.dispose()
    assert [tuple(r) for r in rows] == [(nxt["trial"]["id"], "generated", 900)]
    assert "ERROR" not in pg.log.read_text()  # no duplicate-key errors: ON CONFLICT DO NOTHING
    assert cli.main(["judge", "results", "web", "--params", str(tmp / "params.yaml"), "--db", url]) == 0


def test_a_bad_url_or_a_missing_driver_is_one_line(project, capsys, restore_logging):
    tmp, _ = project
    base = ["judge", "results", "--params", str(tmp / "params.yaml"), "--db"]
    cases = [
        ("nonsense", "not a database URL"),
        ("bogus://u:secret@h/x", "no database kind 'bogus'; genzoo keeps"),
    ]
    if importlib.util.find_spec("MySQLdb") is None:  # another kind without its driver: a traceback, exit 1
        cases.append(
            ("mysql://u:secret@127.0.0.1:1/x", "its driver is not installed (No module named 'MySQLdb')")
        )
        cases.append(
            ("mysql://h/x?password=secret", "--db mysql://h/x?password=***: its driver is not installed")
        )
    cases.append(
        ("postgresql://u:secret@host:abc/x", "--db 'postgresql://u:***@host:abc/x': not a database URL")
    )
    if importlib.util.find_spec("aiosqlite") is not None:  # (an asyncio driver: MissingGreenlet at first)
        cases.append((f"sqlite+aiosqlite:///{tmp / 'a.db'}", "an asyncio driver (sqlite+aiosqlite)"))
    if importlib.util.find_spec("pg8000") is None:
        cases.append(("postgresql+pg8000://u:secret@127.0.0.1:1/x", "pip install 'genzoo[postgres]'"))
    port = _free_port()  # nothing listens there
    cases.append((f"postgresql://u:secret@127.0.0.1:{port}/x", "cannot open the study database"))
    for url, message in cases:
        assert cli.main([*base, url]) == 2
        err = capsys.readouterr().err
        assert message in err and err.strip().count("\n") == 0 and "secret" not in err, err
    with contextlib.suppress(KeyError):
        judge._engines.pop("nonsense")


def test_two_processes_first_opening_a_database_and_adding_raters_at_once(project, pg):
    """The tables made by two engines at once (an advisory lock: one waits), then raters
    added from four threads at once: each counts the others (the study row is locked)."""
    tmp, params = project
    url = pg.url("together")
    barrier, errors = threading.Barrier(2), []

    def open_fresh():
        barrier.wait()
        try:
            judge._open(url, create=False).dispose()  # a new engine, as a second process would make
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(repr(e))

    threads = [threading.Thread(target=open_fresh) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    req = judge.request(params, url, name="crowd", families=["gan"], per_family=2, attention=1, pairs=0)
    judge.create(params, url, req)
    barrier, made = threading.Barrier(4), []

    def add():
        barrier.wait()
        made.append(judge.add_rater(url, "crowd"))

    threads = [threading.Thread(target=add) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r["name"] for r in made) == ["rater-2", "rater-3", "rater-4", "rater-5"]  # rater-1: create
