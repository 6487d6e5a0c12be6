import re

import pytest
import yaml

from genzoo.tasks.config import ParamsError, load_params, validate
from tests.conftest import tiny_params

BASE = {"models": {"vae": {}}}


def test_repository_params_are_valid():
    p = load_params("params.yaml")
    assert p.families == ["pixelcnn", "realnvp", "vae", "gan", "ddpm"]
    assert p.train_config("gan").betas == (0.0, 0.9)  # family block overrides the train block
    assert p.train_config("vae").batch_size == 64  # ... and inherits the rest
    quick = load_params("params.yaml", profile="quick")
    assert quick.train_config("vae").steps < p.train_config("vae").steps


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"models": {"nope": {}}}, "models.nope: unknown family"),
        ({"models": {"vae": {"train": {"lr": -1}}}}, "models.vae.train.lr"),
        ({"models": {"vae": {}}, "train": {"betas": [2, 0.9]}}, "train.betas.0: Input should be less than 1"),
        ({"models": {"vae": {"net": {"latent_dim": "big"}}}}, "models.vae.net.latent_dim"),
        ({"models": {"vae": {"net": {"latnt_dim": 3}}}}, "models.vae.net.latnt_dim"),
        (
            {"models": {"pixelcnn": {"net": {"guidance": 1.5}}}},
            "models.pixelcnn.net: guidance 1.5 needs label_dropout > 0",
        ),
        ({"models": {"vae": {}}, "train": {"steps": 0}}, "train.steps"),
        ({"models": {"vae": {}}, "data": {"source": "ftp:x"}}, "data.source"),
        ({"models": {"vae": {}}, "data": {"test_fraction": 0.9}}, "data.test_fraction"),
        ({"models": {"vae": {}}, "run": {"device": "tpu"}}, "run.device"),
        ({"models": {"vae": {}}, "sede": 1}, "sede"),
        ({}, "models: at least one family"),
        ({"models": {"vae": {}}, "ray": {"resources": {"gan": {"num_cpus": 2}}}}, "ray.resources.gan"),
        ({"models": {"vae": {}}, "ray": {"object_store_mb": 64}}, "ray.object_store_mb"),  # Ray's least: 75
        ({"models": {"vae": {}}, "evaluate": {"seeds": 0}}, "evaluate.seeds"),
        ({"models": {"vae": {}}, "detect": {"families": ["gan"]}}, "detect.families: gan has no likelihood"),
        ({"models": {"vae": {}}, "detect": {"quantile": 1.0}}, "detect.quantile"),
        ({"models": {"vae": {}}, "detect": {"holdout_train": {"stpes": 3}}}, "detect.holdout_train.stpes"),
        ({"models": {"vae": {}}, "detect": {"holdout_train": {"lr": -1}}}, "detect.holdout_train.lr"),
        ({"models": {"vae": {}}, "usefulness": {"train": {"lr": -1}}}, "usefulness.train.lr"),
        (
            {"models": {"vae": {}}, "augment": {"families": ["best", "gan"]}},
            "augment.families: gan is not a family in models (vae) nor `best`",
        ),
        (
            {"models": {"vae": {}}, "evaluate": {"baselines": {"gmm_components": []}}},
            "evaluate.baselines.gmm_components",
        ),
        # keys an earlier genzoo read say what replaced them
        (
            {"models": {"vae": {}}, "train": {"batch_values": 50176}},
            "train.batch_values: renamed batch_pixels",
        ),
        (
            {"models": {"vae": {}}, "evaluate": {"sample_values": 78400}},
            "evaluate.sample_values: renamed sample_pixels: it counts pixels",
        ),
    ],
)
def test_bad_params_name_the_key(raw, key):
    with pytest.raises(ParamsError) as e:
        validate(raw)
    assert key in str(e.value)


def test_every_bad_key_is_named_at_once_a_boolean_is_no_number_and_a_profiles_keys_say_so(tmp_path):
    """A bad section beside a bad family block: both named (the family's was lost); true/false
    for a number is refused (pydantic alone reads it as 1/0); a key a profile set says so."""
    with pytest.raises(ParamsError) as e:
        validate(
            {
                "seed": "x",
                "run": {"threads": 0},
                "models": {"vae": {"train": {"lr": -1}, "net": {"hiden": 3}}},
                "augment": {"recipe": "nope"},
            }
        )
    lines = str(e.value).splitlines()[1:]
    assert [line.split(":")[0].strip() for line in lines] == [
        "seed", "run.threads", "augment.recipe", "models.vae.train.lr", "models.vae.net.hiden"
    ]  # fmt: skip
    with pytest.raises(ParamsError) as e:  # a bad key inside a family's block: the family is still there
        validate({"models": {"vae": {"trian": {}}}, "ray": {"resources": {"vae": {"num_cpus": 1}}}})
    assert str(e.value) == "invalid params: models.vae.trian: unknown key; did you mean train?"
    from genzoo.tasks.config import _without  # two errors under one key: the key goes, once

    raw = {"models": {"vae": {"trian": 1, "net": {}}}, "usefulness": {"fractions": [True]}}
    locs = [("models", "vae", "trian"), ("models", "vae", "trian"), ("usefulness", "fractions", 0)]
    assert _without(raw, locs) == {"models": {"vae": {"net": {}}}, "usefulness": {}}
    for raw, key in (
        ({"seed": True}, "seed"),
        ({"models": {"vae": {"train": {"lr": False}}}}, "models.vae.train.lr"),
        ({"models": {"vae": {"net": {"latent_dim": True}}}}, "models.vae.net.latent_dim"),
        ({"evaluate": {"seeds": True}}, "evaluate.seeds"),
        ({"data": {"channels": True}}, "data.channels"),  # a Literal of numbers
        ({"models": {"vae": {"train": {"exclude_classes": [True]}}}}, "models.vae.train.exclude_classes"),
        ({"usefulness": {"fractions": [True, 0.1]}}, "usefulness.fractions"),  # items of a list
    ):
        with pytest.raises(ParamsError, match=f"{key}: expected a number, not true/false"):
            validate({**BASE, **raw})
    assert validate({**BASE, "run": {"track": True}}).run.track is True  # a boolean where one is due
    for bad in (float("nan"), float("inf")):  # `-o train.lr=nan` was "less than or equal to 10 (got 'nan')"
        with pytest.raises(ParamsError, match="train.lr: Input should be a finite number"):
            validate({**BASE, "train": {"lr": bad}})
    f = tmp_path / "p.yaml"
    f.write_text("models:\n  vae: {}\nprofiles:\n  quick: {models.vae.train.stepz: 60, seed: 1}\n")
    load_params(f)  # (the profile's keys are read when it is used)
    with pytest.raises(ParamsError) as e:
        load_params(f, profile="quick")
    assert "models.vae.train.stepz: unknown key; did you mean steps? (got 60) [set by profiles.quick]" in str(
        e.value
    )
    f.write_text("models:\n  vae: {}\nprofiles:\n  quick: {models.vae.trian.steps: 60}\n")
    with pytest.raises(ParamsError) as e:  # the misspelt block the profile's key made: the profile's too
        load_params(f, profile="quick")
    assert str(e.value).endswith("models.vae.trian: unknown key; did you mean train? [set by profiles.quick]")
    # the file's own error under a block a profile set another key of: not the profile's
    f.write_text("models:\n  vae: {net: {latent_dim: -1}}\nprofiles:\n  quick: {models.vae.net.hidden: 8}\n")
    with pytest.raises(ParamsError) as e:
        load_params(f, profile="quick")
    assert "latent_dim" in str(e.value) and "profiles.quick" not in str(e.value)
    f.write_text("models:\n  vae: {}\nprofiles:\n  quick: {models.vae.train.stepz: 60, seed: 1}\n")
    with pytest.raises(ParamsError) as e:  # -o over the profile's key: the -o is the origin
        load_params(f, ["models.vae.train.stepz=5"], profile="quick")
    assert "models.vae.train.stepz" in str(e.value) and "profiles.quick" not in str(e.value)
    f.write_text("models:\n  vae: {}\nprofiles:\n  quick: {models.vae.train: {steps: 5}}\n")
    with pytest.raises(ParamsError) as e:  # an -o under a block the profile set: the -o's
        load_params(f, ["models.vae.train.lr=-1"], profile="quick")
    assert str(e.value) == "invalid params: models.vae.train.lr: Input should be greater than 0 (got -1)"


def test_messages_read_as_a_user_wrote_the_value(tmp_path):
    """A union's members as one line (not a line per member with pydantic's tag in the key), a
    pair given one value, YAML's 1e3 (text, not a number), a pattern's choices (not the regex)."""
    f = tmp_path / "p.yaml"
    f.write_text("models:\n  gan: {}\n")
    for override, line in (
        ("data.image_size=[32]", "data.image_size: expected int or tuple[int, int] (got [32])"),
        ("models.gan.train.betas=[0.9]", "models.gan.train.betas: too few values (no item 1) (got [0.9])"),
        ("train.steps=1e3", "train.steps: Input should be a valid integer, unable to parse string as an "
                            "integer; YAML reads 1e3 as text, not a number: write 1000 (got '1e3')"),
        ("run.device=gpu", "run.device: expected one of auto, cpu, cuda, cuda:N, mps (got 'gpu')"),
        ("train.schedule=linear", "train.schedule: expected one of cosine, constant (got 'linear')"),
    ):  # fmt: skip
        with pytest.raises(ParamsError) as e:
            load_params(f, [override])
        assert str(e.value) == f"invalid params: {line}"
    assert load_params(f, ["run.device=cuda:1", "train.lr=1e-3"]).train.lr == 1e-3
    # keys that look like pydantic's tags are keys: a dict key's error, a recipe named none
    for override, line in (
        ("augment.class_ratios={a: 0.5}", "augment.class_ratios.a.[key]: Input should be a valid integer"),
        ("recipes.none={bogus: 1}", "recipes.none.bogus: unknown key; known: synthetic_per_real, mode,"),
        ("models.gan.train.dict=1", "models.gan.train.dict: unknown key; known: steps, batch_size,"),
        ("models.gan.train.steps=1.5e0", "unable to parse string as an integer (got '1.5e0')"),
    ):
        with pytest.raises(ParamsError) as e:
            load_params(f, [override])
        assert line in str(e.value), str(e.value)
    # YAML's merge keys still merge (the duplicate-key check skips them)
    f.write_text("models:\n  vae: {}\n  gan: {}\nprofiles:\n  quick: &q {models.vae.train.steps: 10}\n"
                 "  quicker: {<<: *q, models.gan.train.steps: 5}\n")  # fmt: skip
    p = load_params(f, profile="quicker")
    assert (p.train_config("vae").steps, p.train_config("gan").steps) == (10, 5)


def test_overrides_and_profiles(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("models:\n  vae: {net: {latent_dim: 4}}\nprofiles:\n  small: {models.vae.train.steps: 7}\n")
    p = load_params(f, ["models.vae.net.latent_dim=8", "seed=3"], profile="small")
    assert p.net_config("vae").latent_dim == 8 and p.seed == 3 and p.train_config("vae").steps == 7
    # a family's block deleted from the file: its profile lines make no family of it (the quick
    # profile's models.gan.train.steps made a GAN with default net settings, and status a KeyError)
    f.write_text(
        "models:\n  vae: {}\nprofiles:\n  small: {models.vae.train.steps: 7, models.gan.train.lr: 1}\n"
    )
    assert load_params(f, profile="small").families == ["vae"]
    # a family added by an -o keeps the profile's lines; a profile's whole block adds a family
    p = load_params(f, ["models.gan.net={}"], profile="small")
    assert p.families == ["vae", "gan"] and p.train_config("gan").lr == 1
    f.write_text("models:\n  vae: {}\nprofiles:\n  small: {models.gan: {train: {steps: 5}}}\n")
    assert load_params(f, profile="small").families == ["vae", "gan"]
    f.write_text("models:\n  vae: {net: {latent_dim: 4}}\nprofiles:\n  small: {models.vae.train.steps: 7}\n")
    with pytest.raises(ParamsError, match="models.vae.net.latent_dim"):
        load_params(f, ["models.vae.net.latent_dim=-3"])
    with pytest.raises(ParamsError, match="profiles.fast: no such profile"):
        load_params(f, profile="fast")
    with pytest.raises(ParamsError, match="expected key.path=value"):
        load_params(f, ["seed"])
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    f.write_text("models:\n  vae: {}\ntrain:\n  steps: 2000\n  lr: 0.001\n  steps: 100\n")
    with pytest.raises(ParamsError) as e:  # YAML keeps the last silently
        load_params(f)
    assert str(e.value) == (f"{f}: line 6: key 'steps' given twice in one block (first at line 4; YAML "
                            "would keep the last silently): remove one")  # fmt: skip


def test_threads_follow_each_tasks_cpus_evaluator_included():
    raw = {
        "models": {"vae": {}, "gan": {}},
        "ray": {
            "resources": {"default": {"num_cpus": 1}, "gan": {"num_cpus": 2}, "evaluator": {"num_cpus": 3}}
        },
    }
    p = validate(raw)
    assert (p.threads("vae"), p.threads("gan"), p.threads("evaluator")) == (1, 2, 3)
    raw["run"] = {"threads": 4}  # run.threads wins everywhere
    assert validate(raw).threads("evaluator") == 4


def test_quick_profile_gives_large_images_fewer_samples_and_smaller_batches():
    """The quick profile keeps digits as they are and scales larger images down by their pixels:
    32x32 grey images get the batches and sample counts of 32x32 RGB ones."""
    from genzoo.models import DataSpec
    from genzoo.models.base import by_pixels
    from genzoo.models.evaluator import batch_split
    from genzoo.tasks.augment import class_counts

    quick = load_params("params.yaml", profile="quick")
    digits, mnist = DataSpec(1, 8, 8, 17, 10), DataSpec(1, 28, 28, 256, 10)
    grey, rgb = DataSpec(1, 32, 32, 32, 2), DataSpec(3, 32, 32, 32, 2)
    specs = (digits, mnist, grey, rgb)
    cfg = quick.train_config("pixelcnn")
    assert [by_pixels(cfg.batch_size, cfg.batch_pixels, s, 8) for s in specs] == [64, 20, 16, 16]
    assert [batch_split(10**6, s, quick.evaluate.evaluator, None)[0] for s in specs] == [128, 41, 32, 32]
    assert [batch_split(10**6, s, quick.usefulness.cnn, None)[0] for s in specs] == [64, 20, 16, 16]
    assert [quick.evaluate.per_class(s) for s in specs] == [100, 32, 25, 25]
    assert list(class_counts(quick.augment, grey)) == list(class_counts(quick.augment, rgb)) == [25, 25]
    assert list(class_counts(quick.augment, digits)) == [100] * 10
    # the default params draw the same count at any size
    default = load_params("params.yaml")
    assert default.evaluate.per_class(rgb) == 100 and list(class_counts(default.augment, rgb)) == [100, 100]


def test_params_remember_the_profile_they_were_loaded_with(tmp_path):
    import yaml

    from genzoo.tasks.config import load_params

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"models": {"vae": {}}, "profiles": {"short": {"train.steps": 7}}}))
    assert load_params(path).profile is None
    p = load_params(path, profile="short")
    assert p.profile == "short" and p.train.steps == 7
    assert "profile" not in p.model_dump() and p.model_copy().profile == "short"  # not a key of the file


def test_quick_profile_measures_the_recipe_its_dataset_is_made_with_and_trains_no_teacher():
    """A first look measures the usefulness of the very dataset it writes, and spends no minutes
    on the ten teachers of `distil` (most of its usefulness time on a folder of 28x28 images)."""
    quick = load_params("params.yaml", profile="quick")
    assert quick.usefulness.recipes == [quick.augment.recipe]
    assert not any(quick.recipes[r].teacher for r in quick.usefulness.recipes)
    default = load_params("params.yaml")
    assert default.augment.recipe in default.usefulness.recipes


def test_a_train_override_a_family_shadows_is_named(tmp_path, caplog):
    """`-o train.steps=60` changes nothing for a family that sets its own models.<f>.train.steps
    (params.yaml sets every family's): said in a warning naming what to override instead."""
    import yaml

    raw = {"models": {"vae": {"train": {"steps": 300}}, "gan": {}}, "train": {"steps": 100}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with caplog.at_level("WARNING", logger="genzoo.config"):
        params = load_params(path, ["train.steps=60", "train.batch_size=16", "seed=3"])
    assert params.train_config("vae").steps == 300 and params.train_config("gan").steps == 60
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "train.steps=60: changes nothing for vae, which sets its own models.vae.train.steps; "
        "override that instead (e.g. models.vae.train.steps) if you train it"
    ]
    caplog.clear()  # a key inside one a family sets whole (the GAN's phase_lr), or the whole block
    raw["models"]["gan"] = {"train": {"phase_lr": {"disc": 4e-4, "gen": 2e-4}}}
    path.write_text(yaml.safe_dump(raw))
    with caplog.at_level("WARNING", logger="genzoo.config"):
        params = load_params(path, ["train.phase_lr.disc=1e-3", "train={steps: 60}"])
    assert params.train_config("gan").phase_lr == {"disc": 4e-4, "gen": 2e-4}
    assert [r.getMessage() for r in caplog.records] == [
        "train.phase_lr.disc=1e-3: changes nothing for gan, which sets its own models.gan.train.phase_lr; "
        "override that instead (e.g. models.gan.train.phase_lr.disc) if you train it",
        "train={steps: 60}: changes nothing for vae, which sets its own models.vae.train.steps; "
        "override that instead (e.g. models.vae.train.steps) if you train it",
    ]
    caplog.clear()  # a value refused anyway: its error alone, no warning about it before
    with caplog.at_level("WARNING", logger="genzoo.config"), pytest.raises(ParamsError, match="write 1000"):
        load_params(path, ["train.steps=1e3"])
    assert not caplog.records


def test_a_shadowed_override_names_only_the_families_the_command_uses(tmp_path, caplog):
    """`genzoo train --family gan -o train.steps=60` warned that it "changes nothing for pixelcnn,
    realnvp, vae, ..." (every family that sets its own steps), though gan takes it; `genzoo sample`
    said so too, beside its own line that no -o changes a trained model's draw."""
    import yaml

    from genzoo.flows import cli

    raw = {"models": {"vae": {"train": {"steps": 300}}, "ddpm": {"train": {"steps": 300}}, "gan": {}}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))

    def said(*argv: str) -> list[str]:
        caplog.clear()
        with caplog.at_level("WARNING", logger="genzoo"):
            cli._params(cli.parse([*argv, "--params", str(path), "-o", "train.steps=60"]))
        return [r.getMessage() for r in caplog.records]

    assert said("train", "--family", "gan") == []
    assert said("train", "--family", "vae") == [
        "train.steps=60: changes nothing for vae, which sets its own models.vae.train.steps; "
        "override that instead (e.g. models.vae.train.steps) if you train it"
    ]
    assert said("run", "--families", "gan") == []  # the flow says it, of the families it runs (below)
    assert said("sample", "--family", "vae", "--out", "x") == []  # (sample's own line: tests/flows)
    import logging.handlers

    from genzoo.flows import pipeline

    class Checked(Exception):
        pass

    def stop(params):
        raise Checked  # (the flow's first check after its params: nothing of a run starts)

    for families, line in (
        (["gan", "ddpm"], "changes nothing for ddpm, which"),
        (None, "changes nothing for ddpm, vae, which"),
    ):
        heard = logging.handlers.BufferingHandler(100)  # (Prefect's import sets up logging anew: caplog's
        logging.getLogger("genzoo.config").addHandler(heard)  # handler may be gone by then)
        try:
            with pytest.MonkeyPatch.context() as m, pytest.raises(Checked):
                m.setattr(pipeline, "check_outputs", stop)
                pipeline.pipeline.fn(params_file=str(path), families=families, overrides=["train.steps=60"])
        finally:
            logging.getLogger("genzoo.config").removeHandler(heard)
        (warned,) = [r.getMessage() for r in heard.buffer]
        assert warned.startswith(f"train.steps=60: {line}"), warned
    from genzoo.tasks.config import stage_args

    caplog.clear()
    with caplog.at_level("WARNING", logger="genzoo"):
        stage_args(["gan", "--params", str(path), "train.steps=60"], "train", "family")
    assert not caplog.records


def test_a_shadowed_override_is_said_once_by_commands_that_look_at_other_profiles(tmp_path, caplog):
    """`genzoo status -o train.steps=60` loads the params under each other profile too (what a
    stale model may have been made with): the warning is the command's own params', said once."""
    import yaml

    from genzoo.tasks.layout import other_profiles

    raw = {"models": {"vae": {"train": {"steps": 300}}}, "profiles": {"quick": {"seed": 1}, "long": {}}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with caplog.at_level("WARNING", logger="genzoo.config"):
        params = load_params(path, ["train.steps=60"])
        others = other_profiles(params, path, ["train.steps=60"], None)
    assert set(others) == {"quick", "long"} and others["quick"].seed == 1
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["train.steps=60"]


def test_a_misspelt_key_names_the_key_meant(tmp_path):
    """pydantic's "Extra inputs are not permitted" said which key was meant, at every level: a
    section, a family's block, its train and net keys, a dict's entries, the augment request."""
    f = tmp_path / "p.yaml"
    f.write_text("models:\n  vae: {}\n")
    for override, line in (
        ("modles.vae.train.steps=3", "modles: unknown key; did you mean models?"),
        ("data.imge_size=3", "data.imge_size: unknown key; did you mean image_size? (got 3)"),
        ("models.vae.train.stepz=3", "models.vae.train.stepz: unknown key; did you mean steps? (got 3)"),
        ("models.vae.net.latnet=3", "models.vae.net.latnet: unknown key; did you mean latent_dim? (got 3)"),
        ("ray.resources.vae.cpu=2", "ray.resources.vae.cpu: unknown key; did you mean num_cpus? (got 2)"),
        ("ray.resources.vae.zzz=2", "ray.resources.vae.zzz: unknown key; known: num_cpus, num_gpus, memory"),
        ("usefulness.train.lrr=1", "usefulness.train.lrr: unknown key; did you mean lr? (got 1)"),
    ):  # fmt: skip
        with pytest.raises(ParamsError) as e:
            load_params(f, [override])
        assert str(e.value).startswith(f"invalid params: {line}"), str(e.value)
    from genzoo.tasks.config import Params, Recipe, _keys_at

    assert _keys_at(Params, ("recipes", "any")) == list(Recipe.model_fields)
    assert _keys_at(Params, ("profiles", "quick")) is None  # a profile's keys are dotted paths, any
    assert _keys_at(Params, ("seed",)) is None


def test_an_override_of_a_profiles_key_is_refused_naming_the_key_to_override(tmp_path):
    """`-o profiles.quick.models.vae.train.steps=10` was taken and changed nothing (the profile is
    applied before the -o's), even with an invalid value: refused, naming the key itself."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({**tiny_params(tmp_path), "profiles": {"quick": {"train.steps": 2}}}))
    for value in ("10", "-5"):
        with pytest.raises(ParamsError, match=re.escape(
            "-o profiles.quick.models.vae.train.steps: a profile's settings are applied before the -o's, so "
            "this changes nothing; override the key itself (-o models.vae.train.steps=...)"
        )):  # fmt: skip
            load_params(path, [f"profiles.quick.models.vae.train.steps={value}"], "quick")
    with pytest.raises(ParamsError, match=re.escape(
        "(-o train.steps=..., or -o models.<family>.train.steps=... for a family that sets its own)"
    )):  # fmt: skip
        load_params(path, ["profiles.quick.train.steps=5"], "quick")
    with pytest.raises(ParamsError, match=r"-o profiles: a profile's settings"):
        load_params(path, ["profiles={}"])
    assert load_params(path, ["models.vae.train.steps=10"], "quick").models["vae"].train["steps"] == 10


def test_an_empty_params_file_is_named_unless_the_overrides_make_the_configuration(tmp_path):
    from genzoo.tasks.config import ParamsError, load_params

    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ParamsError, match="empty.yaml: the file is empty"):
        load_params(empty)
    params = load_params(empty, ["models.gan={}"])  # -o's may give the whole configuration
    assert params.families == ["gan"]
