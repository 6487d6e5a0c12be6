"""Human evaluation: studies where people judge whether images look real (``genzoo judge``).

A study holds real test images, samples of the trained families (balanced per family and
class) and attention checks (uniform noise nobody should call real), all as PNGs in a
database; each rater gets a secret token and their own shuffled list of trials: one image at a
time ("real" or "generated"), then pairs of two families' samples of one class ("which looks
more real?"). Every answer is stored in its own transaction the moment it arrives; answering an
answered trial again changes nothing.

The database is any SQLAlchemy URL; by default a SQLite file, ``<runs_dir>/human/studies.db``,
in WAL mode with a busy timeout, so several raters answer at once and a killed server loses
nothing that was acknowledged; for a team, PostgreSQL (``postgresql://...``, the ``postgres``
extra's psycopg 3; tested against a real server in tests/flows/test_judge_postgres.py).

Results (:func:`results`): per family the HYPE-infinity error
(Zhou et al. 2019, arXiv 1904.01121) with a bootstrap interval over raters and images, per
class, the real images' own error, Krippendorff's alpha, a Bradley-Terry ranking of the pairs,
and Kendall's tau against the Fréchet-distance and precision rankings; written to
``runs/evaluation/human/<name>.json`` (the report shows it) and to each family's MLflow run.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from genzoo.metrics.human import (
    bootstrap_bradley_terry,
    bootstrap_hype,
    compared_groups,
    kendall_tau,
    krippendorff_alpha,
)
from genzoo.models.base import atomic_write_text
from genzoo.tasks import tracking
from genzoo.tasks.config import Params, advise, stage_args
from genzoo.tasks.data import load_split
from genzoo.tasks.errors import GenzooError, ModelNotFound, UsageError, exit_code
from genzoo.tasks.layout import (
    evaluation_dir,
    json_safe,
    model_sha,
    other_models,
    read_json,
    trained_families,
)

log = logging.getLogger("genzoo.judge")

DB_ENV = "GENZOO_JUDGE_DB"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# the most of each a study takes (the deployment's form says the same): every rater answers
# every image, so a study of 100,000 images per family is a typo, not a plan
MIN_REPS, MAX_REPS = 10, 1_000_000  # bootstrap replicates of `judge results` (0: no interval at all)
LIMITS = {"--per-family": 1000, "--reals": 10000, "--attention": 100, "--pairs": 100, "--raters": 100}
SINGLE_ANSWERS = ("real", "generated")
PAIR_ANSWERS = ("left", "right")


class StudyError(GenzooError, ValueError):
    """A study that cannot be made or read as asked (a name taken or unknown, a bad count)."""


# ----------------------------------------------------------------------------- the database

meta = sa.MetaData()
studies = sa.Table(
    "studies",
    meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("config", sa.Text, nullable=False),  # JSON: families, counts, seed, data
)
items = sa.Table(
    "items",
    meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("study_id", sa.ForeignKey("studies.id"), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),  # real, generated, attention
    sa.Column("family", sa.String(32)),  # the generating family (generated only)
    sa.Column("label", sa.Integer),
    sa.Column("png", sa.LargeBinary, nullable=False),
)
raters = sa.Table(
    "raters",
    meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("study_id", sa.ForeignKey("studies.id"), nullable=False, index=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created", sa.Float, nullable=False),
)
trials = sa.Table(
    "trials",
    meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("rater_id", sa.ForeignKey("raters.id"), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("mode", sa.String(8), nullable=False),  # single, pair
    sa.Column("item_a", sa.ForeignKey("items.id"), nullable=False),
    sa.Column("item_b", sa.ForeignKey("items.id")),  # pair: the right-hand image
    sa.UniqueConstraint("rater_id", "position"),
)
answers = sa.Table(
    "answers",
    meta,
    sa.Column("trial_id", sa.ForeignKey("trials.id"), primary_key=True),  # one answer per trial
    sa.Column("answer", sa.String(16), nullable=False),
    sa.Column("ms", sa.Integer, nullable=False),  # time from the image shown to the answer
    sa.Column("at", sa.Float, nullable=False),
)


def default_url(params: Params) -> str:
    """``GENZOO_JUDGE_DB`` when set, else a SQLite file under the runs folder."""
    if os.environ.get(DB_ENV):
        return os.environ[DB_ENV]
    return f"sqlite:///{(Path(params.run.runs_dir) / 'human' / 'studies.db').resolve()}"


def _sqlite_pragmas(conn, _record) -> None:
    cur = conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor it them
    cur.execute("PRAGMA synchronous=FULL")  # an acknowledged answer survives a crash
    cur.execute("PRAGMA busy_timeout=15000")  # two raters at the same instant: one waits
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


# A driverless ``postgresql://`` URL means SQLAlchemy's default driver, psycopg2; take whichever
# PostgreSQL driver is installed instead (psycopg 3 is what ``genzoo[postgres]`` brings).
PG_DRIVERS = ("psycopg", "psycopg2", "pg8000")


def resolve_url(url: str) -> sa.engine.URL:
    """``url`` parsed and checked before any connection: a malformed URL, a kind of database
    SQLAlchemy has no dialect for, or one without an installed driver, is a :class:`UsageError`
    saying what to do."""
    import importlib.util

    try:
        u = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as e:
        shown = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)  # (a password before a bad port: not shown)
        said = str(e).replace(url, shown)
        raise UsageError(
            f"--db {shown!r}: not a database URL ({said}); e.g. sqlite:///runs/human/studies.db or "
            "postgresql://user:password@host:5432/genzoo"
        ) from None
    if u.get_backend_name() in ("postgresql", "postgres"):
        given = u.get_driver_name() if "+" in u.drivername else None
        candidates = [given] if given else list(PG_DRIVERS)
        driver = next((m for m in candidates if importlib.util.find_spec(m) is not None), None)
        if driver is None:
            raise UsageError(
                f"--db {_safe(u)}: the PostgreSQL driver {given or 'psycopg'!r} is not installed: "
                "pip install 'genzoo[postgres]' (psycopg 3)"
            )
        u = u.set(drivername=f"postgresql+{driver}")  # (postgres:// is an alias SQLAlchemy 2 lacks)
    kinds = "genzoo keeps studies in SQLite (sqlite:///path.db) or PostgreSQL (postgresql://...)"
    try:  # another kind: SQLAlchemy's dialect and its driver, or one line (a traceback, exit 1)
        dialect = u.get_dialect()
        dialect.import_dbapi()  # (imports the driver's module: no connection)
    except sa.exc.NoSuchModuleError:
        raise UsageError(f"--db {_safe(u)}: no database kind {u.drivername!r}; {kinds}") from None
    except ImportError as e:
        raise UsageError(f"--db {_safe(u)}: its driver is not installed ({e}); {kinds}") from None
    except Exception as e:  # a dialect refusing its driver (a version, an old API): its reason
        raise UsageError(f"--db {_safe(u)}: {u.drivername} cannot be used ({e}); {kinds}") from None
    if getattr(dialect, "is_async", False):  # (sqlite+aiosqlite: MissingGreenlet at the first query)
        raise UsageError(f"--db {_safe(u)}: an asyncio driver ({u.drivername}); {kinds}, with a plain driver")
    return u


_engines: dict[str, sa.Engine] = {}
_engines_lock = threading.Lock()


def engine(url: str, create: bool = False) -> sa.Engine:
    """The study database at ``url``, one engine (and connection pool) per URL and process: a
    server's requests share it. Its tables are made when missing; a SQLite file that does not
    exist is made only with ``create`` (making a study): elsewhere a mistyped ``--db`` path is
    an error, not a new empty database."""
    with _engines_lock:
        if url not in _engines:
            _engines[url] = _open(url, create)
        return _engines[url]


def _open(url: str, create: bool) -> sa.Engine:
    u = resolve_url(url)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        if not create and not Path(u.database).is_file():
            raise StudyError(
                f"no study database at {u.database}: `{advise('judge create')}` makes one (or --db / "
                f"{DB_ENV} names another)"
            )
        Path(u.database).parent.mkdir(parents=True, exist_ok=True)
    eng = sa.create_engine(u, pool_pre_ping=True)
    if eng.dialect.name == "sqlite":  # SQLite only: WAL, fsync on commit, a busy wait, foreign keys
        sa.event.listen(eng, "connect", _sqlite_pragmas)
    try:
        with eng.begin() as c:
            if eng.dialect.name == "postgresql":  # two processes creating the tables at once: one waits
                c.execute(sa.text("SELECT pg_advisory_xact_lock(7104251907)"))
            meta.create_all(c)
    except sa.exc.OperationalError as e:
        eng.dispose()
        why = " ".join(str(e.orig).split())  # one line (drivers' messages run over several)
        raise StudyError(f"--db {_safe(u)}: cannot open the study database: {why}") from None
    return eng


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ----------------------------------------------------------------------------- making a study


def _png(img: np.ndarray) -> bytes:
    """(C, H, W) in [0, 1] -> PNG bytes at the image's own size (the page upscales it)."""
    from PIL import Image

    a = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    pil = Image.fromarray(a[0], "L") if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0)[..., :3])
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class Request:
    name: str
    families: tuple[str, ...]
    per_family: int
    reals: int
    attention: int
    pairs: int  # pair trials per rater for each pair of families
    seed: int
    raters: int


def request(
    params: Params,
    url: str,
    *,
    name: str | None = None,
    families: list[str] | str | None = None,
    per_family: int = 20,
    reals: int | None = None,
    attention: int = 3,
    pairs: int = 5,
    seed: int = 0,
    raters: int = 1,
) -> Request:
    """Check a study request before any work: the name is free and well formed, every family
    is in params and trained, the counts are positive."""
    if families in (None, "all", ["all"]):
        families = [f for f in params.families if (Path(params.run.runs_dir) / f / "model.json").exists()]
        if not families:
            raise ModelNotFound(
                f"no trained family under {params.run.runs_dir} ({params.command('run')} first)"
            )
    families = trained_families(params, families, ", or all")
    name = name or f"study-{time.strftime('%Y%m%d-%H%M%S')}"
    if not NAME.fullmatch(name):
        raise StudyError(f"--name {name!r}: use letters, digits, '_', '.', '-' (at most 64, no leading dot)")
    for key, v, low in (
        ("--per-family", per_family, 1),
        ("--attention", attention, 0),
        ("--pairs", pairs, 0),
        ("--raters", raters, 0),
        ("--reals", per_family if reals is None else reals, 1),
    ):
        if not low <= v <= LIMITS[key]:
            raise StudyError(f"{key}: expected an integer from {low} to {LIMITS[key]}, got {v}")
    need = per_family if reals is None else reals
    _, yt, manifest = load_split(params.data.prepared_dir, "test")
    counts = np.bincount(yt.numpy(), minlength=int(manifest["num_classes"]))
    default = f" (--reals defaults to --per-family, {per_family})" if reals is None else ""
    if not counts.all():  # real images are spread over every class, as the generated ones are
        empty = ", ".join(str(c) for c in np.flatnonzero(counts == 0))
        raise StudyError(f"--reals {need}: the test split holds no real image of class {empty}{default}")
    if -(-need // len(counts)) > counts.min():  # each class's share, each real image shown once
        raise StudyError(
            f"--reals {need}: the test split holds {counts.min()} real images of its smallest class, "
            f"so at most {counts.min() * len(counts)} distinct real images spread evenly over "
            f"{len(counts)} classes{default}; ask for fewer"
        )
    with engine(url, create=True).connect() as c:
        if c.execute(sa.select(studies.c.id).where(studies.c.name == name)).first():
            raise StudyError(f"study {name!r} already exists in {_safe(url)}; choose another --name")
    return Request(
        name,
        tuple(families),
        per_family,
        per_family if reals is None else reals,
        attention,
        pairs,
        seed,
        raters,
    )


SECRET_QUERY = ("password", "passwd", "pwd", "sslpassword", "sslkey", "token", "secret")


def _safe(url: str | sa.engine.URL) -> str:
    """The URL without its password, for messages: ``user:***@`` and a secret query value
    (``?password=...``) masked."""
    try:
        u = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return "<a malformed URL>"
    u = u.update_query_dict({k: "***" for k in u.query if k.lower() in SECRET_QUERY})
    return u.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


def _balanced_labels(n: int, num_classes: int, order: np.ndarray) -> np.ndarray:
    """``n`` labels as even over the classes as ``n`` allows, the remainder in the first classes
    of ``order`` (a seeded permutation, one per study: the real images and every family's on the
    same classes; drawn apart, 4 of 10 classes each put the real images on other digits than the
    generated ones)."""
    extra = order[: n % num_classes]
    return np.sort(np.concatenate([np.repeat(np.arange(num_classes), n // num_classes), extra]))


def _of_this_data(params: Params, family: str, model: Any, manifest: dict[str, Any]) -> Any:
    """``model``, refused (before anything is drawn or written) where it was trained on other data
    than the real images it would stand beside: 8x8 samples enlarged beside 28x28 real images, or
    another dataset's, are told apart at a glance, and the study's near-0% error would be recorded
    as the family's."""
    from genzoo.tasks.data import DataError, check_trained_on

    s = model.spec
    made, real = (s.channels, s.height, s.width, s.num_classes), (*manifest["shape"], manifest["num_classes"])
    if made != tuple(real):
        raise DataError(
            f"{family}: trained on images of {s.channels}x{s.height}x{s.width} in {s.num_classes} classes, "
            f"the prepared data's are {'x'.join(map(str, real[:3]))} in {real[3]}: raters would tell its "
            f"samples at a glance; retrain it (`{params.command(f'train --family {family}')}`)"
        )
    check_trained_on(family, getattr(model, "data_sha256", None), manifest, params.data.prepared_dir,
                     "raters would judge its samples against images it never learned")  # fmt: skip
    return model


def create(params: Params, url: str, req: Request, port: int | None = None) -> dict[str, Any]:
    """Draw the study's images (seeded) and store the study with ``req.raters`` raters; returns
    ``{"study", "items", "raters": [{"name", "token", "port"}]}`` (tokens are shown once: only their
    hashes are stored). ``port``: the one its links point at, kept for raters added later."""
    import torch

    from genzoo.tasks.sample import draw, load_model

    rng = np.random.default_rng(req.seed)
    xt, yt, manifest = load_split(params.data.prepared_dir, "test")
    num_classes = int(manifest["num_classes"])
    levels = int(manifest.get("levels", 256))
    models = {f: _of_this_data(params, f, load_model(f, params.run.runs_dir), manifest) for f in req.families}
    rows: list[dict[str, Any]] = []
    order = rng.permutation(num_classes)  # which classes take the remainder: the same for every kind
    labels = _balanced_labels(req.reals, num_classes, order)
    for c in np.unique(labels):  # real test images, each class as often as the generated ones,
        pool = np.flatnonzero(yt.numpy() == c)  # each image once (request() checked there are enough)
        for i in rng.choice(pool, size=int((labels == c).sum()), replace=False):
            rows.append({"kind": "real", "family": None, "label": int(c), "png": _png(xt[int(i)].numpy())})
    # every family on the real images' classes: each judged on the same mix, and a pair's two images
    # of one class (with fewer images than classes, each family's own classes shared few)
    labels = torch.from_numpy(_balanced_labels(req.per_family, num_classes, order))
    for k, f in enumerate(req.families):
        x, y = draw(models[f], req.per_family, labels=labels, seed=req.seed * 1000 + k)
        x = torch.round(x.clamp(0, 1) * (levels - 1)) / (levels - 1)  # the real images' level grid:
        rows += [  # a pixel between the levels would tell a generated image at a glance
            {"kind": "generated", "family": f, "label": int(y[i]), "png": _png(x[i].numpy())}
            for i in range(len(x))
        ]
    shape = tuple(xt.shape[1:])
    for _ in range(req.attention):  # uniform noise on the data's level grid
        noise = rng.integers(0, levels, size=shape) / (levels - 1)
        rows.append({"kind": "attention", "family": None, "label": None, "png": _png(noise)})
    # stored (numbered) in a seeded shuffle: an image's number, in its URL, says nothing of what
    # it is (in the order drawn, the reals came first, then each family in turn, by class)
    rows = [rows[i] for i in rng.permutation(len(rows))]
    config = {
        **req.__dict__,
        "families": list(req.families),
        "data": manifest.get("source"),
        "class_names": manifest.get("class_names"),
        "shape": list(shape),
        # the models its images came from: results are a family's figures only while it is that one
        "models": {f: model_sha(params, f) for f in req.families},
        "port": port,
    }
    eng = engine(url, create=True)
    try:
        with eng.begin() as c:
            sid = c.execute(
                sa.insert(studies).values(name=req.name, created=time.time(), config=json.dumps(config))
            ).inserted_primary_key[0]
            c.execute(sa.insert(items), [{**r, "study_id": sid} for r in rows])
    except sa.exc.IntegrityError:
        raise StudyError(
            f"study {req.name!r} already exists in {_safe(url)}; choose another --name"
        ) from None
    made = [add_rater(url, req.name) for _ in range(req.raters)]
    log.info("study %s: %d images, %d raters in %s", req.name, len(rows), len(made), _safe(url))
    return {"study": req.name, "items": len(rows), "raters": made}


def _study(c, name: str, lock: bool = False):
    """The study's row; ``lock``: held until the transaction ends (PostgreSQL: SELECT ... FOR
    UPDATE, so two raters added at once count one another; SQLite has no row locks and ignores
    it: two raters added there at the very same instant may get the same default name)."""
    q = sa.select(studies).where(studies.c.name == name)
    row = c.execute(q.with_for_update() if lock else q).first()
    if row is None:
        known = c.execute(sa.select(studies.c.name).order_by(studies.c.id)).scalars().all()
        raise StudyError(f"no study {name!r} (studies: {', '.join(known) or 'none'})")
    return row


def add_rater(url: str, study: str, name: str | None = None) -> dict[str, str]:
    """A new rater of ``study`` with a fresh secret token and their own trials: every image
    once in a seeded order of their own, then the pairs. Returns ``{"name", "token", "port"}`` (the
    port the study's links point at, None for a study made before it was kept)."""
    if name is not None and not (0 < len(name) <= 64):
        raise StudyError("--rater-name: 1 to 64 characters")
    eng = engine(url)
    token = secrets.token_urlsafe(24)
    with eng.begin() as c:
        st = _study(c, study, lock=True)
        cfg = json.loads(st.config)
        n = c.execute(
            sa.select(sa.func.count()).select_from(raters).where(raters.c.study_id == st.id)
        ).scalar()
        rid = c.execute(
            sa.insert(raters).values(
                study_id=st.id,
                name=name or f"rater-{n + 1}",
                token_sha256=token_hash(token),
                created=time.time(),
            )
        ).inserted_primary_key[0]
        rows = c.execute(
            sa.select(items.c.id, items.c.kind, items.c.family, items.c.label)
            .where(items.c.study_id == st.id)
            .order_by(items.c.id)
        ).all()
        rng = np.random.default_rng([cfg["seed"], int(n)])
        order = [rows[i].id for i in rng.permutation(len(rows))]
        todo = [{"mode": "single", "item_a": i, "item_b": None} for i in order]
        fams = cfg["families"]
        for a in range(len(fams)):
            for b in range(a + 1, len(fams)):
                left = [r for r in rows if r.family == fams[a]]
                right = [r for r in rows if r.family == fams[b]]
                shared = [r for r in left if any(o.label == r.label for o in right)] or left
                for _ in range(cfg["pairs"]):
                    x = shared[int(rng.integers(len(shared)))]
                    same = [r for r in right if r.label == x.label] or right  # one class
                    y = same[int(rng.integers(len(same)))]
                    pair = (x.id, y.id) if rng.random() < 0.5 else (y.id, x.id)
                    todo.append({"mode": "pair", "item_a": pair[0], "item_b": pair[1]})
        pair_part = todo[len(order) :]
        todo = todo[: len(order)] + [pair_part[i] for i in rng.permutation(len(pair_part))]
        c.execute(sa.insert(trials), [{**t, "rater_id": rid, "position": p} for p, t in enumerate(todo)])
    return {"name": name or f"rater-{n + 1}", "token": token, "port": cfg.get("port")}


# ----------------------------------------------------------------------------- what the server asks


@dataclass(frozen=True)
class Rater:
    id: int
    name: str
    study: str
    data: str | None = None  # the study's data.source: what the real images are


# What the rating page calls the real images, by data source (others: "real images"); never
# the path of a user's own files
REAL_IMAGES = {
    "digits": "real handwritten digits",
    "mnist": "real handwritten digits",
    "fashion_mnist": "real photographs of clothes and shoes",
    "cifar10": "real photographs",
}


def rater_for(eng: sa.Engine, token: str) -> Rater | None:
    """The rater holding ``token`` (None for an unknown one)."""
    with eng.connect() as c:
        row = c.execute(
            sa.select(raters.c.id, raters.c.name, studies.c.name.label("study"), studies.c.config)
            .join(studies, studies.c.id == raters.c.study_id)
            .where(raters.c.token_sha256 == token_hash(token))
        ).first()
    return Rater(row.id, row.name, row.study, json.loads(row.config).get("data")) if row else None


def _snapshot(eng: sa.Engine) -> sa.Connection:
    """A connection whose reads see one snapshot: PostgreSQL's REPEATABLE READ (its default,
    READ COMMITTED, lets an answer landing between two reads make them disagree)."""
    c = eng.connect()
    return c.execution_options(isolation_level="REPEATABLE READ") if eng.dialect.name == "postgresql" else c


def progress(eng: sa.Engine, rater: Rater) -> dict[str, Any]:
    """The rater's next unanswered trial (None when done) with how far they are."""
    with _snapshot(eng) as c:
        total = c.execute(sa.select(sa.func.count()).where(trials.c.rater_id == rater.id)).scalar()
        done = c.execute(
            sa.select(sa.func.count()).select_from(trials.join(answers)).where(trials.c.rater_id == rater.id)
        ).scalar()
        nxt = c.execute(
            sa.select(trials.c.id, trials.c.position, trials.c.mode, trials.c.item_a, trials.c.item_b)
            .outerjoin(answers, answers.c.trial_id == trials.c.id)
            .where(trials.c.rater_id == rater.id, answers.c.trial_id.is_(None))
            .order_by(trials.c.position)
            .limit(1)
        ).first()
    trial = None
    if nxt is not None:
        trial = {
            "id": nxt.id,
            "position": nxt.position,
            "mode": nxt.mode,
            "images": [i for i in (nxt.item_a, nxt.item_b) if i is not None],
        }
    return {"rater": rater.name, "study": rater.study, "done": done, "total": total, "trial": trial}


def image_for(eng: sa.Engine, rater: Rater, item_id: int) -> bytes | None:
    """The PNG of ``item_id`` when it is in one of this rater's trials (else None)."""
    with eng.connect() as c:
        return c.execute(
            sa.select(items.c.png)
            .join(trials, sa.or_(trials.c.item_a == items.c.id, trials.c.item_b == items.c.id))
            .where(trials.c.rater_id == rater.id, items.c.id == item_id)
            .limit(1)
        ).scalar()


class NotYourTrial(GenzooError, LookupError):
    """A trial that is not the rater's."""


class NotYourTurn(GenzooError, LookupError):
    """An answer to a trial of the rater's other than the one the page shows (the next
    unanswered): an image nobody showed them."""


def answer(eng: sa.Engine, rater: Rater, trial_id: int, value: str, ms: int) -> dict[str, Any]:
    """Store the answer to ``trial_id`` in its own transaction. A second answer to the same
    trial (a double click, a retried request, two tabs) keeps the first: ``stored`` says which.
    Only the rater's next unanswered trial, the one their page shows, takes a new answer."""
    with eng.connect() as c:  # the next trial read first: a trial unanswered when it is read
        nxt = c.execute(  # after it (answers are only ever added) was unanswered then too, so
            sa.select(trials.c.id)  # the same request sent twice at once is told `stored: false`,
            .outerjoin(answers, answers.c.trial_id == trials.c.id)  # not out of turn
            .where(trials.c.rater_id == rater.id, answers.c.trial_id.is_(None))
            .order_by(trials.c.position)
            .limit(1)
        ).scalar()
        mode = c.execute(
            sa.select(trials.c.mode).where(trials.c.id == trial_id, trials.c.rater_id == rater.id)
        ).scalar()
        answered = c.execute(sa.select(answers.c.trial_id).where(answers.c.trial_id == trial_id)).first()
    if mode is None:
        raise NotYourTrial(f"trial {trial_id}: not one of this rater's trials")
    allowed = SINGLE_ANSWERS if mode == "single" else PAIR_ANSWERS
    if value not in allowed:
        raise StudyError(f"answer {value!r}: a {mode} trial takes {' or '.join(allowed)}")
    if answered is not None:
        return {"stored": False}  # answered before: the first answer stands
    if trial_id != nxt:
        raise NotYourTurn(f"trial {trial_id}: not the trial this rater's page shows (trial {nxt})")
    row = {"trial_id": trial_id, "answer": value, "ms": int(ms), "at": time.time()}
    if eng.dialect.name in ("postgresql", "sqlite"):  # INSERT ... ON CONFLICT DO NOTHING: no error
        # raised (none in the server's log), and two at once: one row, the other told so
        insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[eng.dialect.name]
        stmt = insert(answers).values(**row).on_conflict_do_nothing()
        with eng.begin() as c:  # (psycopg 3 under SQLAlchemy 2.1 gave rowcount -1: RETURNING tells)
            if eng.dialect.insert_returning:
                stored = c.execute(stmt.returning(answers.c.trial_id)).first() is not None
            else:
                stored = c.execute(stmt).rowcount == 1
    else:
        try:
            with eng.begin() as c:
                c.execute(sa.insert(answers).values(**row))
            stored = True
        except sa.exc.IntegrityError:
            stored = False  # answered before: the first answer stands
    return {"stored": stored}


# ----------------------------------------------------------------------------- results


def answers_of(eng: sa.Engine, study: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The study's config and every answer with its trial, rater and image(s)."""
    a_items = items.alias("a")
    b_items = items.alias("b")
    with _snapshot(eng) as c:
        st = _study(c, study)
        n_raters = c.execute(sa.select(sa.func.count()).where(raters.c.study_id == st.id)).scalar()
        rows = (
            c.execute(
                sa.select(
                    raters.c.id.label("rater"),
                    trials.c.mode,
                    answers.c.answer,
                    answers.c.ms,
                    a_items.c.id.label("item"),
                    a_items.c.kind,
                    a_items.c.family,
                    a_items.c.label,
                    b_items.c.id.label("item_b"),
                    b_items.c.family.label("family_b"),
                )
                .select_from(
                    answers.join(trials)
                    .join(raters)
                    .join(a_items, a_items.c.id == trials.c.item_a)
                    .outerjoin(b_items, b_items.c.id == trials.c.item_b)
                )
                .where(raters.c.study_id == st.id)
                .order_by(answers.c.trial_id)
            )
            .mappings()
            .all()
        )
    cfg = json.loads(st.config) | {"raters_total": n_raters, "created": st.created}
    return cfg, [dict(r) for r in rows]


def score(cfg: dict[str, Any], rows: list[dict[str, Any]], reps: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The study's figures from its answers (pure: no database), see the module docstring.
    A rater who called any attention check "real" is left out of every figure and counted."""
    failed = {r["rater"] for r in rows if r["kind"] == "attention" and r["answer"] == "real"}
    answered = {r["rater"] for r in rows}
    kept = [r for r in rows if r["rater"] not in failed]
    single = [r for r in kept if r["mode"] == "single" and r["kind"] in ("real", "generated")]
    wrong = np.array([(r["answer"] == "real") == (r["kind"] == "generated") for r in single], dtype=float)
    rater = np.array([r["rater"] for r in single], dtype=int)
    item = np.array([r["item"] for r in single], dtype=int)
    kind = np.array([r["kind"] for r in single])
    family = np.array([r["family"] or "" for r in single])
    label = np.array([-1 if r["label"] is None else r["label"] for r in single])
    real = kind == "real"
    names = cfg.get("class_names") or [str(c) for c in range(int(label.max()) + 1 if len(label) else 0)]
    out_f: dict[str, Any] = {}
    for k, f in enumerate(cfg["families"]):
        fake = family == f
        sel = fake | real
        if not fake.any() or not real.any():
            out_f[f] = {"error": None, "n_fake": int(fake.sum())}
            continue
        err, lo, hi = bootstrap_hype(rater[sel], item[sel], wrong[sel], fake[sel], reps=reps, seed=seed + k)
        n_raters = len(np.unique(rater[fake]))  # of its images (one: the bootstrap resamples images alone)
        per_class = {}
        for c in sorted(set(label[fake].tolist())):
            fc, rc = fake & (label == c), real & (label == c)
            if rc.any():
                per_class[names[c] if c < len(names) else str(c)] = {
                    "error": 0.5 * wrong[fc].mean() + 0.5 * wrong[rc].mean(),
                    "fake_error": float(wrong[fc].mean()),
                    "n": int(fc.sum() + rc.sum()),
                }
        out_f[f] = {
            "error": err,
            "ci95": [lo, hi] if n_raters > 1 else None,
            "raters": n_raters,
            "fake_error": float(wrong[fake].mean()),
            "n_fake": int(fake.sum()),
            "n_real": int(real.sum()),
            "per_class": per_class,
        }
    units: dict[int, list[int]] = {}
    for r in single:
        units.setdefault(r["item"], []).append(int(r["answer"] == "real"))
    pairs = [r for r in kept if r["mode"] == "pair"]
    fams = list(cfg["families"])
    comparisons = []
    for r in pairs:
        a, b = fams.index(r["family"]), fams.index(r["family_b"])
        comparisons.append((r["rater"], a, b) if r["answer"] == "left" else (r["rater"], b, a))
    pairwise = None
    if comparisons and len(fams) > 1:
        theta, lo, hi = bootstrap_bradley_terry(comparisons, len(fams), reps=max(200, reps // 4), seed=seed)
        pair_raters = len({r for r, _, _ in comparisons})  # the interval resamples them: none from one
        ci = {
            f: [float(lo[i]), float(hi[i])]
            if pair_raters > 1 and np.isfinite([theta[i], lo[i], hi[i]]).all()
            else None
            for i, f in enumerate(fams)
        }
        wins = {f: {g: 0 for g in fams if g != f} for f in fams}
        counts = np.zeros((len(fams), len(fams)))
        for _, w, lsr in comparisons:
            wins[fams[w]][fams[lsr]] += 1
            counts[w, lsr] += 1
        groups = [[fams[i] for i in g] for g in compared_groups(counts)]
        pairwise = {
            "model": "Bradley-Terry (MM, 0.5 pseudo-wins per compared pair and side)",
            "n": len(comparisons),
            "wins": wins,
            "families": {f: {"theta": float(theta[i]), "ci95": ci[f]} for i, f in enumerate(fams)},
            "raters": pair_raters,
            # (strengths compare within a group of families linked by comparisons; none: not compared)
            "groups": groups,
        }
    return {
        "study": cfg["name"],
        "models": cfg.get("models"),  # each family's weights (sha256) the images came from
        "created": cfg.get("created"),  # the study's: the report shows the newest study with answers
        "protocol": {k: cfg[k] for k in ("families", "per_family", "reals", "attention", "pairs", "seed")}
        | {
            "measure": "HYPE-infinity error (Zhou et al. 2019, arXiv 1904.01121), balanced: the mean of "
            "the error on generated and on real images; 95% percentile bootstrap over raters and images",
            "bootstrap_reps": reps,
        },
        "raters": {
            "total": cfg.get("raters_total", len(answered)),
            "answered": len(answered),
            "included": len(answered - failed),
            "excluded_attention": len(failed),
        },
        "answers": len(single),
        # the same answers (real or generated, single images) of raters who failed an attention check
        "answers_left_out": sum(
            r["rater"] in failed and r["mode"] == "single" and r["kind"] != "attention" for r in rows
        ),
        "median_ms": float(np.median([r["ms"] for r in kept])) if kept else None,
        "families": out_f,
        "real": {"error": float(wrong[real].mean()) if real.any() else None, "n": int(real.sum())},
        "agreement": {
            "krippendorff_alpha": krippendorff_alpha(list(units.values())),
            "images": sum(len(u) >= 2 for u in units.values()),
        },
        "pairwise": pairwise,
    }


def against_metrics(params: Params, figures: dict[str, Any], other: list[str] = ()) -> dict[str, Any]:
    """Does the human ranking (a higher error is better) agree with the metrics' (a lower
    Fréchet distance, a higher precision)? Kendall's tau over the families scored by both, with
    the models the study drew from (``other``: the families whose weights runs/ no longer holds),
    each evaluation of that model by the current evaluator (an evaluation of an earlier model, or
    in another evaluator's features, ranked figures of something else: ``left_out`` says why)."""
    from genzoo.tasks.layout import scored_by_another_evaluator

    q = {f: read_json(evaluation_dir(params) / f / "quality.json") for f in figures["families"]}
    drawn = figures.get("models") or {}
    left_out = {}
    for f in figures["families"]:
        if not q.get(f) or f in other:
            continue
        if q[f].get("model_sha256") not in (None, drawn.get(f, q[f].get("model_sha256"))):
            left_out[f] = f"evaluated before it was trained again: {params.command(f'evaluate --family {f}')}"
        elif scored_by_another_evaluator(params, q[f]):
            left_out[f] = f"scored by another evaluator: {params.command(f'evaluate --family {f}')}"
    both = [
        f
        for f, d in figures["families"].items()
        if d.get("error") is not None and q.get(f) and f not in other and f not in left_out
    ]
    out: dict[str, Any] = {"families": both} | ({"left_out": left_out} if left_out else {})
    if len(both) >= 2:
        err = [figures["families"][f]["error"] for f in both]
        out["kendall_tau_fd"] = kendall_tau(err, [-q[f]["fd"] for f in both])
        out["kendall_tau_precision"] = kendall_tau(err, [q[f]["precision"] for f in both])
    return out


def results_path(params: Params, name: str) -> Path:
    return evaluation_dir(params) / "human" / f"{name}.json"


def results(params: Params, url: str, name: str | None = None, reps: int = 2000) -> dict[str, Any]:
    """Score study ``name`` (default: the latest), write ``runs/evaluation/human/<name>.json``
    atomically and log each family's figures to its MLflow run (``human.<figure>``)."""
    if isinstance(reps, bool) or not isinstance(reps, int) or not MIN_REPS <= reps <= MAX_REPS:
        raise StudyError(f"--reps: expected bootstrap replicates from {MIN_REPS} to {MAX_REPS}, got {reps}")
    eng = engine(url)
    if name is None:
        with eng.connect() as c:
            name = c.execute(sa.select(studies.c.name).order_by(studies.c.id.desc()).limit(1)).scalar()
        if name is None:
            raise StudyError(f"no study in {_safe(url)} (genzoo judge create)")
    cfg, rows = answers_of(eng, name)
    figures = score(cfg, rows, reps=reps, seed=int(cfg["seed"]))
    other = other_models(params, figures)
    figures = json_safe(figures | {"metrics": against_metrics(params, figures, other)})
    path = results_path(params, name)
    atomic_write_text(path, json.dumps(figures, indent=2, allow_nan=False))
    if other:
        log.warning(
            "study %s: its images of %s came from weights runs/ no longer holds (trained again, or deleted, "
            "since); not logged to MLflow nor ranked against the metrics (its pairwise ranking keeps them; "
            "`%s` makes a study of the models there)", name, ", ".join(other), params.command("judge create"),
        )  # fmt: skip
    for f, d in figures["families"].items():
        if d.get("error") is not None and f not in other:
            numbers = {"error": d["error"], "fake_error": d["fake_error"]}
            if d["ci95"]:  # (one rater: none)
                numbers |= {"error_lo": d["ci95"][0], "error_hi": d["ci95"][1]}
            tracking.log_stage(params, f, numbers, prefix="human.", artifact=path, artifact_path="human")
    return figures


def main(argv: list[str] | None = None) -> None:
    params, name = stage_args(argv, "Score a human-evaluation study into runs/evaluation/human/.", "study")
    results(params, default_url(params), name)


if __name__ == "__main__":
    sys.exit(exit_code(main, "judge"))
