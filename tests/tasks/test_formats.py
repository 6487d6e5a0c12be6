"""The dataset a user pulls: every format read back by the library that reads it, class folders
in label order past 10 classes, soft labels and sources kept, the card quoting only measured
figures, and the writer as safe as the rest of genzoo (a user's folder or a link refused, a
failed write leaving the old version whole)."""

import hashlib
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import genzoo
from genzoo.tasks import formats
from genzoo.tasks.config import ParamsError, validate
from genzoo.tasks.formats import (
    DatasetContent,
    MissingExtra,
    check_formats,
    class_folders,
    measured_figures,
    render_card,
    write_dataset,
)
from genzoo.tasks.layout import NotGenzooOutput
from tests.conftest import tiny_params

K = 12  # past 10: "10" sorts before "2" when folders are bare numbers
NAMES = [*"0123456789", "ten/../x", ".."]  # a separator, a parent reference, nothing left of a name


def content(n: int = 36, soft: bool = True, seed: int = 0) -> DatasetContent:
    g = np.random.default_rng(seed)
    labels = np.arange(n) % K
    probs = g.random((n, K))
    return DatasetContent(
        images=g.integers(0, 17, (n, 1, 8, 8)).astype(np.uint8),
        labels=labels,
        source=np.where(np.arange(n) < n - 6, "vae", "real"),  # a mixed dataset: 6 real images
        levels=17,
        class_names=NAMES,
        soft_labels=probs / probs.sum(1, keepdims=True) if soft else None,
    )


def imagefolder_classes(root: Path) -> dict[str, int]:
    """torchvision's rule for ImageFolder's class index (torchvision.datasets.folder.find_classes:
    ``classes = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())``,
    ``class_to_idx = {cls_name: i for i, cls_name in enumerate(classes)}``). torchvision does not
    import beside the CPU torch genzoo is tested with, so the test applies the rule itself."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    return {name: i for i, name in enumerate(classes)}


def tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- every format round-trips


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    target = tmp_path_factory.mktemp("formats") / "ds"
    c = content()
    info = {"name": "ds", "recipe": {"families": ["vae"], "per_class": 3}, "data": {"source": "digits"},
            "filters": {"reject_copies": True, "copy_radius": 1.5, "drawn": 40, "kept": 36,
                        "rejected": {"copies": 4, "low_confidence": 0}, "min_confidence": 0.0}}  # fmt: skip
    manifest = write_dataset(target, c, formats=["npz", "imagefolder", "hf"], info=info)
    return target, c, manifest


def test_npz_and_genzoo_loader_keep_labels_soft_labels_and_sources(written):
    target, c, m = written
    with np.load(target / "images.npz", allow_pickle=False) as z:
        assert np.array_equal(z["images"], c.images) and np.array_equal(z["labels"], c.labels)
        assert z["soft_labels"].dtype == np.float32 and np.array_equal(z["soft_labels"], c.soft_labels)
        assert z["source"].tolist() == c.source.tolist()
        assert z["is_synthetic"].tolist() == [True] * 30 + [False] * 6
    assert m["sha256"] == hashlib.sha256((target / "images.npz").read_bytes()).hexdigest()
    ds = genzoo.load_dataset(target)
    x, y = ds[13]
    assert y == 1 and torch.equal(x, torch.from_numpy(c.images[13].astype(np.float32) / 16))
    assert torch.equal(ds.soft_labels, torch.from_numpy(c.soft_labels)) and ds.class_names == NAMES
    assert ds.is_synthetic.sum() == 30 and (ds.source[ds.is_synthetic] == "vae").all()
    assert m["soft_labels"] is True and m["counts_per_source"] == {"real": 6, "vae": 30}
    assert m["formats"] == ["npz", "imagefolder", "hf"] and m["recipe"] == {
        "families": ["vae"],
        "per_class": 3,
    }
    assert m["files"] == {"npz": "images.npz", "card": "README.md", "imagefolder": "images", "hf": "hf"}
    assert m["filters"]["rejected"]["copies"] == 4 and m["num_classes"] == K and m["class_names"] == NAMES


def test_image_folders_give_each_image_its_label_under_imagefolders_rule(written):
    target, c, m = written
    idx = imagefolder_classes(target / "images")
    assert sorted(idx, key=idx.get) == m["class_folders"]
    seen = 0
    for folder, label in idx.items():
        for png in (target / "images" / folder).iterdir():
            row = int(png.stem)  # the image's row in images.npz
            assert c.labels[row] == label, (folder, png.name)
            levels = np.rint(np.asarray(Image.open(png), dtype=np.float64) * 16 / 255).astype(np.uint8)
            assert np.array_equal(levels, c.images[row, 0])
            seen += 1
    assert seen == len(c.labels)
    # bare class numbers would have broken it: ImageFolder would give "10" index 2
    assert imagefolder_classes_of([str(i) for i in range(K)])["10"] == 2


def imagefolder_classes_of(names: list[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(sorted(names))}


def test_hugging_face_dataset_loads_with_load_from_disk(written):
    from datasets import load_from_disk

    target, c, _ = written
    ds = load_from_disk(str(target / "hf"))
    assert len(ds) == len(c.labels) and ds.features["label"].names == NAMES
    assert set(ds.column_names) == {"image", "label", "source", "is_synthetic", "soft_labels"}
    assert list(ds["label"]) == c.labels.tolist() and list(ds["source"]) == c.source.tolist()
    assert list(ds["is_synthetic"]) == c.is_synthetic.tolist()
    assert np.array_equal(np.array(list(ds["soft_labels"]), dtype=np.float32), c.soft_labels)
    for i in (0, 17, 35):
        pixels = np.asarray(ds[i]["image"], dtype=np.float64)  # a PIL image, decoded by datasets
        assert np.array_equal(np.rint(pixels * 16 / 255).astype(np.uint8), c.images[i, 0])


def test_the_same_content_writes_the_same_bytes_in_every_format(written, tmp_path):
    target, c, m = written
    again = tmp_path / "ds"
    write_dataset(again, content(), formats=["npz", "imagefolder", "hf"], info={"name": "ds"})
    for part in ("images", "hf"):
        assert tree_hash(again / part) == tree_hash(target / part), part
    assert json.loads((again / "manifest.json").read_text())["sha256"] == m["sha256"]


def test_class_folder_names_sort_in_label_order_and_are_safe():
    for k in (2, 12, 101, 1000):
        names = class_folders([f"class {i}" for i in range(k)])
        assert sorted(names) == names and len(set(names)) == k
    odd = ["a/b", "..", "../../etc", "c\\d", "", " sp ace ", "é", "x" * 300, ".hidden", "ok-1.2_x"]
    names = class_folders(odd)
    assert sorted(names) == names
    for n in names:
        assert re.fullmatch(r"\d{2}(_[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)?", n), n
        assert "/" not in n and "\\" not in n and ".." not in n and len(n) <= 63
    assert names[:3] == ["00_a_b", "01", "02_etc"] and names[9] == "09_ok-1.2_x" and names[6] == "06"


# ----------------------------------------------------------------------------- the card and the manifest


def _evaluation(folder: Path) -> None:
    """quality.json and usefulness.json as tasks/evaluate.py and tasks/usefulness.py write them."""
    (folder / "vae").mkdir(parents=True)
    (folder / "usefulness").mkdir()
    quality = {"family": "vae", "fd": 12.345678, "kid": 0.0123, "precision": 0.81, "recall": 0.62,
               "density": 0.9, "coverage": 0.7, "class_accuracy": 0.934,
               "memorization": {"nn_train": 1.0, "nn_real": 1.1, "ratio": 0.909, "copies": 0.004},
               "ci95": {"fd": 0.5, "class_accuracy": 0.01, "memorization": {"ratio": 0.02}},
               "protocol": {"seeds": 3}, "n": 1000, "per_seed": []}  # fmt: skip
    stats = lambda m, h: {"mean": m, "ci95": h, "per_seed": [m, m]}  # noqa: E731
    lift = {"augmented": stats(0.9, 0.01), "lift": stats(0.0321, 0.004)}
    distil = {"synthetic_per_real": 1.0, "real_share": 0.9}
    protocol = {
        "recipes": {"distil": distil},
        "augmentation": "shifts of up to 1 pixel, shearing by up to 0.2",
    }
    usefulness = {"family": "vae", "recipe": "distil", "protocol": protocol,
                  "tstr": {"cnn": stats(0.871, 0.012)}, "augmentation": {"0.1": {"cnn": lift}}}  # fmt: skip
    reference = {"real": {"1.0": {"cnn": stats(0.962, 0.003)}}}
    (folder / "vae" / "quality.json").write_text(json.dumps(quality))
    (folder / "vae" / "usefulness.json").write_text(json.dumps(usefulness))
    (folder / "usefulness" / "reference.json").write_text(json.dumps(reference))


def test_card_quotes_the_measured_figures_and_says_not_measured_otherwise(tmp_path):
    _evaluation(tmp_path / "evaluation")
    measured = measured_figures(tmp_path / "evaluation", ["vae", "gan"])
    assert measured["gan"] == {"quality": None, "usefulness": None}
    c = content(soft=False)
    c.source = np.where(np.arange(36) < 18, "vae", "gan")
    families = {"vae": {"sha256": "a" * 64, "run_id": "r1"}, "gan": {"sha256": "b" * 64}}
    info = {"name": "card", "families": families,
            "params_hash": "f" * 64, "seed": 4, "recipe": {"per_class": 3, "families": ["vae", "gan"],
                                                           "name": "distil"},
            "data": {"source": "digits", "sha256": "d" * 64}, "measured": measured,
            "filters": {"reject_copies": False, "drawn": 36, "rejected": {"copies": 0}}}  # fmt: skip
    m = write_dataset(tmp_path / "card", c, info=info)
    card = (tmp_path / "card" / "README.md").read_text()
    saved = json.loads((tmp_path / "card" / "manifest.json").read_text())
    assert saved["measured"] == measured and m["measured"]["vae"]["quality"]["figures"]["fd"] == {
        "mean": 12.345678, "ci95": 0.5}  # fmt: skip
    # what made it
    for text in (
        "a" * 64,
        "b" * 64,
        "MLflow run `r1`",
        "f" * 64,
        "d" * 64,
        genzoo.__version__,
        "`per_class=3`",
        '| recipe | `distil`: `per_class=3`, `families=["vae", "gan"]` |',  # its name, then its settings
    ):
        assert text in card, text
    # the measured figures, as measured; the family without files: not measured
    for text in ("fd 12.35 ± 0.5", "class_accuracy 0.934 ± 0.01", "| cnn | 87.1% ± 1.2 | 96.2% |",
                 "10% of the real training split (from the family retrained on that 10% alone), 90% of each "
                 "training batch real, changes test accuracy by: cnn +3.2 ± 0.4 points",
                 "over real held-out images' 0.909",
                 "augmentation, shifts of up to 1 pixel, shearing by up to 0.2, the baseline"):  # fmt: skip
        assert text in card, text
    assert "With recipe `distil`, adding 1 synthetic image(s) per real one" in card
    assert "another recipe" not in card
    gan = card.split("### gan")[1].split("## Memorization")[0]
    assert "Usefulness: not measured" in gan and "Quality: not measured" in gan
    assert not re.search(r"\d\.\d", gan)  # no figure for a family that has none
    assert "Not checked: `augment.reject_copies` was off" in card
    assert "CC BY 4.0" in card and "archive.ics.uci.edu" in card
    # the loading snippets name the files that exist, and only those
    assert 'ImageFolder(f"{root}/images", loader=grey)' in card and "load_from_disk" not in card
    # ImageFolder opens images as RGB: the 1-channel images' snippet opens them grey; it compiles
    snippet = card.split("from torchvision.datasets import ImageFolder")[1].split("```")[0]
    compile("root = '.'\n" + snippet, "card", "exec")
    assert '.convert("L")' in snippet
    rgb = render_card(saved | {"shape": [3, 8, 8]})  # RGB images: ImageFolder's own loader
    assert 'ImageFolder(f"{root}/images")' in rgb and "grey" not in rgb
    assert "genzoo.load_dataset(root)" in card and 'np.load(f"{root}/images.npz")' in card
    assert "soft_labels" not in card
    # a dataset made with another recipe than the one measured says so
    info["recipe"]["name"] = "plain"
    write_dataset(tmp_path / "card", c, info=info)
    card = (tmp_path / "card" / "README.md").read_text()
    assert "(this dataset was made with `plain`: the figures are another recipe's)" in card
    # what a recipe's teacher dropped is listed with the copy filter off too
    info["filters"] = {"reject_copies": False, "drawn": 50, "kept": 36,
                       "rejected": {"copies": 0, "low_confidence": 0, "teacher_disagrees": 14}}  # fmt: skip
    write_dataset(tmp_path / "card", c, info=info)
    card = (tmp_path / "card" / "README.md").read_text()
    assert "Not checked: `augment.reject_copies` was off" in card
    assert "Also dropped: 14 the recipe's teacher gave another label.\nKept: 36 of 50 drawn." in card


def test_a_card_quotes_its_own_recipes_lift_at_the_k_it_was_measured_with(tmp_path):
    """A dataset made by another measured recipe than the primary one (`genzoo augment --recipe
    teacher`) quotes that recipe's lift, not the primary's under a "another recipe's" note; and
    the synthetic images per real one the measurement added (k lowered where the pool would
    outgrow what the classifier draws), not the recipe's k."""
    _evaluation(tmp_path / "evaluation")
    path = tmp_path / "evaluation" / "vae" / "usefulness.json"
    u = json.loads(path.read_text())
    stats = lambda m, h: {"mean": m, "ci95": h, "per_seed": [m, m]}  # noqa: E731
    u["protocol"]["recipes"]["teacher"] = {"synthetic_per_real": 20.0, "real_share": 0.5}
    u["recipes"] = {
        "distil": {"augmentation": u["augmentation"], "synthetic_per_real": {"0.1": 1.0}},
        "teacher": {"augmentation": {"0.1": {"cnn": {"augmented": stats(0.95, 0.01),
                                                      "lift": stats(0.05, 0.01)}}},
                    "synthetic_per_real": {"0.1": 15.25}},
    }  # fmt: skip
    path.write_text(json.dumps(u))
    info = {"name": "card", "families": {"vae": {"sha256": "a" * 64}}, "recipe": {"name": "teacher"}}
    for recipe, says in (
        ("teacher", "With recipe `teacher`, adding 15.25 synthetic image(s) per real one to 10% of the "
                    "real training split (from the family retrained on that 10% alone), 50% of each "
                    "training batch real, changes test accuracy by: cnn +5.0 ± 1.0 points"),
        (None, "With recipe `distil` (this dataset was made with `teacher`: the figures are another "
               "recipe's), adding 1 synthetic image(s) per real one"),
    ):  # fmt: skip
        info["measured"] = measured_figures(tmp_path / "evaluation", ["vae"], recipe=recipe)
        write_dataset(tmp_path / "card", content(soft=False), info=info)
        assert says in (tmp_path / "card" / "README.md").read_text(), recipe
    # chosen by lift among several: the card says the winner's figure was its selection criterion too
    info["best"] = {"family": "vae", "metric": "lift", "among": "measured for usefulness",
                    "figures": {"vae": 0.05, "gan": 0.01}, "measured": ["vae", "gan"]}  # fmt: skip
    write_dataset(tmp_path / "card", content(soft=False), info=info)
    card = (tmp_path / "card" / "README.md").read_text()
    assert "gan +1.0 points (chosen by the same test-split figures the card quotes: the winner's lift" in card


def test_a_card_says_how_its_size_and_filters_compare_with_the_measured_pools_and_what_intervals_are_over(
    tmp_path,
):
    """The lift with all the real data was measured on a pool of k x the training split (12,590
    images for distil on digits); a dataset of 36 quoted it as its own. A dataset filtered by the
    evaluator, or with the near-copy filter otherwise than measured, says so; the intervals say
    what they are over (one subset: that subset's)."""
    _evaluation(tmp_path / "evaluation")
    path = tmp_path / "evaluation" / "vae" / "usefulness.json"
    u = json.loads(path.read_text())
    u["protocol"] |= {"n_train": 1000, "seeds": 5, "subset_seeds": [0], "reject_copies": True}
    u["protocol"]["recipes"]["distil"]["synthetic_per_real"] = 10.0
    u["augmentation"]["1.0"] = u["augmentation"]["0.1"]
    u["synthetic_per_real"] = {"0.1": 10.0, "1.0": 10.0}
    path.write_text(json.dumps(u))
    info = {"name": "card", "families": {"vae": {"sha256": "a" * 64}}, "recipe": {"name": "distil"},
            "measured": measured_figures(tmp_path / "evaluation", ["vae"], recipe="distil"),
            "filters": {"reject_copies": False, "min_confidence": 0.9, "drawn": 40, "kept": 36,
                        "rejected": {"low_confidence": 4}}}  # fmt: skip
    write_dataset(tmp_path / "card", content(soft=False), info=info)
    card = " ".join((tmp_path / "card" / "README.md").read_text().split())
    for text in (
        # (the family's own images, 30 of the 36: 6 are real; the command draws them alone, 12 classes)
        "This dataset holds 30 of vae's images, 0.03 per real training image (1000): the lift with all the "
        "real data was measured with a pool of about 10000 synthetic images, 333.3x as many (`genzoo augment "
        "--families vae --per-class 834 --recipe distil --name vae-pool` draws about that many, 12 "
        "classes alike, into a dataset of its own).",
        "Filtered otherwise than measured: this dataset kept only images the evaluator gives their label "
        "with at least 0.9 confidence (`augment.min_confidence`), which the measurement did not filter by; "
        "the measurement dropped near-copies of real images, this dataset kept them:",
        "usefulness's over the real subsets' means where several subsets were measured",
        "(one subset: such an interval holds for the subset drawn",
    ):
        assert text in card, text
    assert "12.7 standard errors" not in card  # five seeds
    assert (  # no hf here: the flag that adds it, and what it needs (a card reads alike wherever written)
        "Hugging Face `datasets`: not written (add `hf` to `augment.formats`, or `genzoo augment --formats "
        "npz,imagefolder,hf`; it needs the `datasets` package: `pip install 'genzoo[hf]'` where it is not "
        "installed)." in card
    )
    u["protocol"]["subset_seeds"] = [0, 1]
    path.write_text(json.dumps(u))
    info["measured"] = measured_figures(tmp_path / "evaluation", ["vae"], recipe="distil")
    info["filters"] = {"reject_copies": True, "drawn": 36, "kept": 36, "rejected": {"copies": 0}}
    info["profile"] = "quick"  # the command a quick run's card gives runs under its profile
    write_dataset(tmp_path / "card", content(soft=False), info=info)
    card = " ".join((tmp_path / "card" / "README.md").read_text().split())
    assert "12.7 standard errors" in card and "one subset" not in card and "Filtered otherwise" not in card
    assert "--recipe distil --profile quick --name vae-pool` draws about that many" in card
    info["request"] = {"sample_pixels": 25600}  # the quick profile's cap: 834 8x8 images a class pass it
    write_dataset(tmp_path / "card", content(soft=False), info=info)
    card = " ".join((tmp_path / "card" / "README.md").read_text().split())
    assert "--profile quick -o augment.sample_pixels=null --name vae-pool` draws about that many" in card
    info["request"] = {"sample_pixels": 64 * 834}  # room for them: no -o
    write_dataset(tmp_path / "card", content(soft=False), info=info)
    assert "sample_pixels=null" not in (tmp_path / "card" / "README.md").read_text()
    # a lift whose pools the filters emptied says it measures nothing; no pool sentence without 1.0
    emptied = {"0.1": {"empty_pools": 2, "emptied": []}}
    u["recipes"] = {"distil": {"augmentation": {"0.1": u["augmentation"]["0.1"]},
                               "synthetic_per_real": {"0.1": 10.0}, "filters": emptied}}  # fmt: skip
    path.write_text(json.dumps(u))
    info["measured"] = measured_figures(tmp_path / "evaluation", ["vae"], recipe="distil")
    write_dataset(tmp_path / "card", content(soft=False), info=info)
    card = " ".join((tmp_path / "card" / "README.md").read_text().split())
    assert (
        "(a lift that measures nothing of vae: the filters left 2 pool(s) without a synthetic image" in card
    )
    assert "This dataset holds" not in card  # 100% was not measured with this recipe


def test_a_card_quotes_no_figures_measured_of_another_model_of_the_family(tmp_path):
    """A family trained again after its evaluation (`genzoo train`, `dvc repro train@vae`): its
    quality.json and usefulness.json name the model they measured, and a dataset drawn from the
    new model quotes neither (the card quoted the old model's FD and lift as the dataset's)."""
    _evaluation(tmp_path / "evaluation")
    for name in ("quality", "usefulness"):
        path = tmp_path / "evaluation" / "vae" / f"{name}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "model_sha256": "a" * 64}))
    same = measured_figures(tmp_path / "evaluation", ["vae"], {"vae": "a" * 64})
    assert same["vae"]["quality"]["figures"]["fd"]["mean"] == 12.345678 and "other_model" not in same["vae"]
    other = measured_figures(tmp_path / "evaluation", ["vae"], {"vae": "c" * 64})
    assert other["vae"]["quality"] is None and other["vae"]["usefulness"] is None
    assert set(other["vae"]["other_model"]) == {"quality", "usefulness"}
    info = {"name": "card", "families": {"vae": {"sha256": "c" * 64}}, "measured": other}
    write_dataset(tmp_path / "card", content(soft=False), info=info)
    card = (tmp_path / "card" / "README.md").read_text().split("### vae")[1].split("## Memorization")[0]
    assert (
        "Usefulness: not measured for this model (" in card
        and "Quality: not measured for this model (" in card
    )
    assert "measured another model of vae than these images were drawn from" in card
    assert "12.35" not in card and "+3.2" not in card


def test_card_licence_follows_the_source_data():
    assert "CC BY 4.0" in formats.licence("digits")
    mine = formats.licence("folder:/data/cats")
    assert "your source data (folder:/data/cats) applies" in mine and "CC BY" not in mine
    assert "CC BY" not in formats.licence("cifar10") and "applies" in formats.licence(None)


def test_card_snippets_run(written, tmp_path):
    """The card's numpy, genzoo and Hugging Face snippets, run as written from beside the folder."""
    target, c, _ = written
    card = (target / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    # torchvision: not installable here; real_dataset: the project's prepared data, not beside it
    runnable = [b for b in blocks if "torchvision" not in b and "real_dataset" not in b]
    assert len(runnable) == 3 and any("real_dataset" in b for b in blocks)
    scope: dict = {}
    cwd = os.getcwd()
    os.chdir(target.parent)
    try:
        for b in runnable:
            exec(compile(b, "README.md", "exec"), scope)
    finally:
        os.chdir(cwd)
    assert np.array_equal(scope["labels"], c.labels) and scope["soft_labels"].shape == (36, K)
    assert scope["class_names"] == NAMES  # label i's name, in the npz itself (no pickle to load it)
    assert len(scope["ds"]) == 36 and scope["ds"].features["label"].names == NAMES
    assert scope["soft"][0][1].shape == (K,)  # the genzoo block's soft targets


# ----------------------------------------------------------------------------- bad input and safety


@pytest.mark.parametrize(
    "change, error",
    [
        ({"soft_labels": np.full((36, K), 0.5)}, "each row must sum to 1"),
        ({"soft_labels": np.full((36, K - 1), 1 / (K - 1))}, "expected shape"),
        ({"soft_labels": np.full((36, K), np.nan)}, "no NaN"),
        ({"labels": np.full(36, K)}, "class indices"),
        ({"source": ["vae"] * 35}, "one family"),
        ({"class_names": NAMES[:-1] + ["0"]}, "not all distinct"),
        ({"levels": 8}, "above every pixel"),
    ],
)
def test_bad_content_is_refused_before_anything_is_written(tmp_path, change, error):
    c = content()
    with pytest.raises(ValueError, match=error):
        fields = ("images", "labels", "source", "levels", "class_names", "soft_labels")
        DatasetContent(**{**{f: getattr(c, f) for f in fields}, **change})


def test_formats_are_checked_and_the_hf_extra_named_when_missing(tmp_path, monkeypatch):
    assert check_formats(["hf", "npz"]) == ("npz", "hf")
    assert check_formats(["imagefolder"]) == ("npz", "imagefolder")  # npz always, named or not
    with pytest.raises(ValueError, match="unknown format"):
        check_formats(["npz", "tfrecord"])
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if the extra were not installed
    with pytest.raises(MissingExtra, match=r"pip install 'genzoo\[hf\]'"):
        write_dataset(tmp_path / "ds", content(), formats=["npz", "hf"])
    assert list(tmp_path.iterdir()) == []


def test_params_formats_key_is_validated_and_png_still_means_image_folders(tmp_path):
    raw = tiny_params(tmp_path, families=["gan"])
    assert validate(raw).augment.formats == ["npz", "imagefolder"]
    for bad, error in (
        (["npz", "zip"], "augment.formats.1"),
        ([], "formats"),
    ):
        with pytest.raises(ParamsError, match=re.escape(error)):
            validate({**raw, "augment": {**raw["augment"], "formats": bad}})
    assert validate({**raw, "augment": {**raw["augment"], "formats": ["hf"]}}).augment.formats == [
        "npz",
        "hf",
    ]
    png = validate({**raw, "augment": {**raw["augment"], "formats": ["npz"], "png": True}})
    assert png.augment.formats == ["npz", "imagefolder"]


def test_writer_replaces_only_its_own_folders_and_a_failed_write_keeps_the_old(tmp_path, monkeypatch):
    target = tmp_path / "ds"
    write_dataset(target, content(), formats=["npz", "imagefolder", "hf"], info={"name": "ds"})
    before = tree_hash(target)

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(formats, "_write_hf", broken)
    with pytest.raises(OSError, match="no space left on the device while writing dataset 'ds'"):
        write_dataset(target, content(seed=1), formats=["npz", "hf"], info={"name": "ds"})
    assert tree_hash(target) == before and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]

    mine = tmp_path / "mine"
    (mine / "images").mkdir(parents=True)
    (mine / "images" / "photo.png").write_bytes(b"mine")
    with pytest.raises(NotGenzooOutput, match="not a genzoo synthetic-dataset"):
        write_dataset(mine, content())
    assert (mine / "images" / "photo.png").read_bytes() == b"mine"
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    with pytest.raises(NotGenzooOutput, match="symbolic link"):
        write_dataset(link, content())
    (tmp_path / "parent-link").symlink_to(tmp_path / "mine", target_is_directory=True)
    with pytest.raises(ValueError, match="parent-link: is a symbolic link"):
        write_dataset(tmp_path / "parent-link" / "ds", content())
    assert tree_hash(target) == before and sorted(p.name for p in mine.iterdir()) == ["images"]


def test_a_class_with_no_image_keeps_its_folder_so_imagefolder_gives_every_image_its_label(tmp_path):
    """`augment.class_ratios: {0: 0.0}` leaves class 0 without images: without its folder,
    ImageFolder's index of every other class was one less than its label (all images wrong)."""
    c = content()
    keep = c.labels != 0
    c = DatasetContent(images=c.images[keep], labels=c.labels[keep], source=c.source[keep], levels=17,
                       class_names=NAMES)  # fmt: skip
    m = write_dataset(tmp_path / "ds", c, formats=["npz", "imagefolder"])
    idx = imagefolder_classes(tmp_path / "ds" / "images")
    assert sorted(idx, key=idx.get) == m["class_folders"] and m["counts_per_class"][0] == 0
    for folder, label in idx.items():
        rows = [int(p.stem) for p in (tmp_path / "ds" / "images" / folder).glob("*.png")]
        assert all(c.labels[r] == label for r in rows), folder
    empty = tmp_path / "ds" / "images" / m["class_folders"][0]
    assert [p.name for p in empty.iterdir()] == [".empty"]  # kept by git and DVC, skipped by ImageFolder
    card = (tmp_path / "ds" / "README.md").read_text()
    assert 'ImageFolder(f"{root}/images", loader=grey, allow_empty=True)' in card
    # written again over itself: the marker is genzoo's own file
    write_dataset(tmp_path / "ds", c, formats=["npz", "imagefolder"])


def test_a_file_a_user_put_inside_a_datasets_folders_stops_its_replacement(tmp_path):
    target = tmp_path / "ds"
    m = write_dataset(target, content(), formats=["npz", "imagefolder", "hf"], info={"name": "ds"})
    n, folders = m["n"], m["class_folders"]
    for mine, named in (
        (f"images/{folders[3]}/my_extra.png", None),
        ("hf/notes.txt", None),
        ("images/extra/000001.png", "images/extra"),
        (f"images/{folders[3]}/{n:06d}.png", None),  # a row images.npz does not have
        (f"images/{K:02d}_mine/000001.png", f"images/{K:02d}_mine"),  # a class it lacks
        (f"images/{folders[2]}/.empty", None),  # a class that has images
        ("png/3/000001.png", "png/3"),
    ):  # the old layout, in a dataset of the new one
        # fmt: skip
        made = [d for d in (target / mine).parents if not d.exists()]
        (target / mine).parent.mkdir(parents=True, exist_ok=True)
        (target / mine).write_bytes(b"mine")
        refused = f"holds {re.escape(named or mine)}, which genzoo did not write"
        with pytest.raises(NotGenzooOutput, match=refused):
            write_dataset(target, content(seed=1), formats=["npz", "imagefolder"], info={"name": "ds"})
        assert (target / mine).read_bytes() == b"mine"
        (target / mine).unlink()
        for d in made:  # innermost first
            d.rmdir()
    # the caches `datasets` writes beside the shards when the dataset is used are not the user's
    from datasets import load_from_disk

    load_from_disk(str(target / "hf")).map(lambda row: {"label2": row["label"]})
    load_from_disk(str(target / "hf")).map(lambda row: {"label3": row["label"]}, num_proc=2)  # in shards
    assert list((target / "hf").glob("cache-*.arrow")) and list(
        (target / "hf").glob("cache-*_of_00002.arrow")
    )
    write_dataset(target, content(seed=1), formats=["npz", "imagefolder"], info={"name": "ds"})  # its own


def test_a_card_or_manifest_a_user_edited_stops_its_replacement(tmp_path):
    """A dataset's README.md is a card people edit (notes, a licence line): a new version of the
    dataset would drop the edit, so it is refused as a file the user added is; the manifest too.
    A card deleted holds nothing to lose."""
    target = tmp_path / "ds"
    write_dataset(target, content(), formats=["npz"], info={"name": "ds"})
    card, manifest = target / "README.md", target / "manifest.json"
    written = card.read_text(), manifest.read_text()
    card.write_text(written[0] + "\nMY NOTES: important\n")
    with pytest.raises(NotGenzooOutput, match=f"{target}: README.md changed since genzoo wrote it; keep"):
        write_dataset(target, content(seed=1), formats=["npz"], info={"name": "ds"})
    assert "MY NOTES" in card.read_text()
    m = json.loads(written[1])
    manifest.write_text(json.dumps({**m, "my_note": "kept?"}, indent=2))
    with pytest.raises(NotGenzooOutput, match="README.md and manifest.json changed since genzoo wrote them"):
        write_dataset(target, content(seed=1), formats=["npz"], info={"name": "ds"})
    card.write_text(written[0])
    manifest.write_text(json.dumps(m))  # formatted otherwise, the same content: genzoo's still
    card.unlink()
    write_dataset(target, content(seed=1), formats=["npz"], info={"name": "ds"})
    assert card.is_file()


def test_a_dataset_written_before_the_formats_still_loads_and_is_replaced(tmp_path):
    """The old layout: images.npz without is_synthetic, png/<int>/ folders, no card."""
    old = tmp_path / "old"
    (old / "png" / "10").mkdir(parents=True)
    (old / "png" / "10" / "000000.png").write_bytes(b"png")
    c = content(soft=False)
    np.savez_compressed(old / "images.npz", images=c.images, labels=c.labels, source=np.full(36, "gan"))
    sha = hashlib.sha256((old / "images.npz").read_bytes()).hexdigest()
    legacy = {
        "made_by": "genzoo",
        "kind": "synthetic-dataset",
        "name": "old",
        "n": 36,
        "levels": 17,
        "sha256": sha,
    }
    (old / "manifest.json").write_text(json.dumps(legacy))
    ds = genzoo.load_dataset(old)
    assert len(ds) == 36 and ds.is_synthetic.all() and ds.soft_labels is None
    assert ds.class_names == [str(i) for i in range(K)]
    write_dataset(old, c, info={"name": "old"})
    assert sorted(p.name for p in old.iterdir()) == ["README.md", "images", "images.npz", "manifest.json"]


def test_colour_images_at_256_levels_round_trip_in_every_format(tmp_path):
    from datasets import load_from_disk

    g = np.random.default_rng(3)
    c = DatasetContent(g.integers(0, 256, (6, 3, 4, 5)).astype(np.uint8), np.array([0, 1, 2, 0, 1, 2]),
                       ["ddpm"] * 6, 256, ["cat", "dog", "bird"])  # fmt: skip
    write_dataset(tmp_path / "rgb", c, formats=["npz", "imagefolder", "hf"])
    hwc = c.images.transpose(0, 2, 3, 1)  # PNG and PIL hold (H, W, C)
    idx = imagefolder_classes(tmp_path / "rgb" / "images")
    assert idx == {"00_cat": 0, "01_dog": 1, "02_bird": 2}
    for folder, label in idx.items():
        for png in (tmp_path / "rgb" / "images" / folder).iterdir():
            assert c.labels[int(png.stem)] == label
            assert np.array_equal(np.asarray(Image.open(png)), hwc[int(png.stem)])
    hf = load_from_disk(str(tmp_path / "rgb" / "hf"))
    assert all(np.array_equal(np.asarray(hf[i]["image"]), hwc[i]) for i in range(6))
    assert "soft_labels" not in hf.column_names and hf.features["label"].names == ["cat", "dog", "bird"]
    assert torch.equal(
        genzoo.load_dataset(tmp_path / "rgb")[5][0], torch.from_numpy(c.images[5] / 255).float()
    )
