import gzip
import json
import pickle
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from genzoo.tasks.config import validate
from genzoo.tasks.prepare import DataError, load_split, load_torchvision_source, prepare
from tests.conftest import logged

BIN = Path(sys.executable).parent


def params(tmp_path, **data):
    return validate({"models": {"vae": {}}, "data": {"prepared_dir": str(tmp_path / "prepared"), **data}})


def test_digits_split_is_stratified_deterministic_and_hashed(tmp_path):
    m = prepare(params(tmp_path))
    assert m["source"] == "digits" and m["shape"] == [1, 8, 8] and m["levels"] == 17
    sizes = {s: v["n"] for s, v in m["splits"].items()}
    assert sum(sizes.values()) == 1797 and sizes["test"] == 359
    test_share = np.array(m["splits"]["test"]["per_class"]) / np.array(
        [sum(m["splits"][s]["per_class"][c] for s in m["splits"]) for c in range(10)]
    )
    assert np.allclose(test_share, 0.2, atol=0.01)
    x, y, _ = load_split(tmp_path / "prepared", "train")
    assert x.shape == (sizes["train"], 1, 8, 8) and x.min() == 0 and x.max() == 1
    files = {p.name: p.read_bytes() for p in (tmp_path / "prepared").iterdir()}
    prepare(params(tmp_path))
    assert files == {p.name: p.read_bytes() for p in (tmp_path / "prepared").iterdir()}
    other = prepare(
        validate({"seed": 1, "models": {"vae": {}}, "data": {"prepared_dir": str(tmp_path / "p2")}})
    )
    assert other["splits"]["test"]["sha256"] != m["splits"]["test"]["sha256"]


def test_tampered_split_is_refused(tmp_path):
    prepare(params(tmp_path))
    f = tmp_path / "prepared" / "val.npz"
    with np.load(f) as z:
        images, labels = z["images"].copy(), z["labels"]
    images[0, 0, 0, 0] += 1
    np.savez(f, images=images, labels=labels)
    with pytest.raises(DataError, match="content hash"):
        load_split(tmp_path / "prepared", "val")


def _folder(root, classes=("a", "b"), n=6, size=(10, 12), mode="L"):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(root / c / f"{i}.png")
    return root


def test_folder_source_resizes_and_pads_and_says_what_it_left_out(tmp_path, caplog):
    root = _folder(tmp_path / "imgs")
    Image.fromarray(np.zeros((30, 20), np.uint8), "L").save(root / "a" / "odd.png")  # another size
    Image.fromarray(np.zeros((16, 16), np.uint8), "L").save(root / "stray.png")  # in no class
    with caplog.at_level("WARNING", logger="genzoo.prepare"):
        m = prepare(params(tmp_path, source=f"folder:{root}", image_size=[16, 16]))
    assert m["shape"] == [1, 16, 16] and m["levels"] == 256 and m["class_names"] == ["a", "b"]
    assert "1 image file(s) beside the class folders, in no class, left out (first: stray.png)" in caplog.text


def test_images_with_transparency_are_read_without_it_and_said(tmp_path):
    """An RGBA image's alpha was dropped in silence: read as torchvision's ImageFolder reads it
    (the colours stored under transparent pixels), with a warning naming the first."""
    from genzoo.tasks.prepare import load_folder_source

    root = _folder(tmp_path / "rgba", n=2, mode="RGB")
    pixels = np.zeros((12, 10, 4), np.uint8)
    pixels[..., 0] = 255  # red under a fully transparent alpha
    Image.fromarray(pixels, "RGBA").save(root / "a" / "icon.png")
    pixels[..., 3] = 255  # an opaque alpha, as many exports carry: nothing to say of it
    Image.fromarray(pixels, "RGBA").save(root / "b" / "opaque.png")
    with logged("genzoo.prepare") as lines:
        data = load_folder_source(root, None)
    assert any("1 image(s) with transparency (first: " in m and "icon.png" in m for m in lines), lines
    assert not any("opaque.png" in m for m in lines), lines
    assert data.images.shape[1] == 3 and data.images[2, :, 0, 0].tolist() == [255, 0, 0]  # a/icon.png


def test_a_class_folders_nested_folders_are_its_images_and_mixed_sizes_name_their_files(tmp_path, caplog):
    """Images in folders below a class folder belong to the class, as torchvision's ImageFolder
    reads them (they were skipped without a word); hidden folders are not read. Images of
    several sizes without data.image_size name a file of each size, as H x W."""
    root = _folder(tmp_path / "imgs", n=4)
    flat = prepare(params(tmp_path, source=f"folder:{root}"))
    assert sum(v["n"] for v in flat["splits"].values()) == 8
    (root / "a" / "more" / "deeper").mkdir(parents=True)
    (root / "a" / ".cache").mkdir()
    for i, d in enumerate(["more", "more/deeper", ".cache"]):
        Image.fromarray(np.full((12, 10), 9 * i, np.uint8), "L").save(root / "a" / d / f"x{i}.png")
    (root / "a" / "more" / "notes.txt").write_text("from the camera")  # below the top: left out
    with caplog.at_level("WARNING", logger="genzoo.prepare"):
        nested = prepare(params(tmp_path, source=f"folder:{root}"))
    per_class = np.sum([v["per_class"] for v in nested["splits"].values()], axis=0).tolist()
    assert per_class == [6, 4] and nested["class_names"] == ["a", "b"]
    assert "1 file(s) that are no images in the folders below it left out (first: " in caplog.text
    (root / "a" / "b-too").symlink_to(root / "b", target_is_directory=True)  # b's images in a as well
    with pytest.raises(DataError, match="outside its class folder .*two classes"):
        prepare(params(tmp_path, source=f"folder:{root}"))
    (root / "a" / "b-too").unlink()

    Image.fromarray(np.zeros((30, 20), np.uint8), "L").save(root / "b" / "tall.png")
    with pytest.raises(
        DataError, match=r"images of 2 sizes \(H x W\): 12x10 \(.*/a/0.png\), 30x20 \(.*/b/tall.png\)"
    ):
        prepare(params(tmp_path, source=f"folder:{root}"))
    for h in (31, 32, 33):  # five sizes: three named, the others counted
        Image.fromarray(np.zeros((h, 20), np.uint8), "L").save(root / "b" / f"h{h}.png")
    with pytest.raises(DataError, match=r"images of 5 sizes \(H x W\): .* and 2 more; set data.image_size"):
        prepare(params(tmp_path, source=f"folder:{root}"))


def test_16_bit_npz_pixels_are_reduced_to_8_bits_unless_their_levels_are_given(tmp_path, caplog):
    """uint16 pixels had as many levels as one file's largest value + 1 (65,527 for random
    ones: a 65k-way softmax per pixel, and two files of one camera on two grids); now 16-bit
    as 16-bit PNGs are, reduced to 8 bits with a warning, unless the npz says its levels."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 65536, (40, 6, 6), dtype=np.uint16)
    np.savez(tmp_path / "u16.npz", images=images, labels=np.arange(40) % 2)
    with caplog.at_level("WARNING", logger="genzoo.prepare"):
        m = prepare(params(tmp_path, source=f"npz:{tmp_path / 'u16.npz'}"))
    assert m["levels"] == 256 and "read as 16-bit and reduced to 8 bits (256 levels)" in caplog.text
    x = np.concatenate([load_split(tmp_path / "prepared", s)[0].numpy() for s in ("train", "val", "test")])
    assert sorted((x * 255).round().ravel().tolist()) == sorted(
        np.rint(images.astype(np.int64) * 255 / 65535).ravel().tolist()
    )
    np.savez(tmp_path / "u12.npz", images=images // 16, labels=np.arange(40) % 2, levels=4096)
    assert prepare(params(tmp_path, source=f"npz:{tmp_path / 'u12.npz'}"))["levels"] == 4096
    np.savez(
        tmp_path / "amb.npz",
        images=np.repeat((images // 256)[:, None, :, :3], 3, axis=1),
        labels=np.arange(40) % 2,
    )  # (40, 3, 6, 3)
    caplog.clear()
    with caplog.at_level("WARNING", logger="genzoo.prepare"):
        assert prepare(params(tmp_path, source=f"npz:{tmp_path / 'amb.npz'}"))["shape"] == [3, 6, 3]
    assert "shape (40, 3, 6, 3) read as (N, C, H, W); for (N, H, W, C) images, transpose" in caplog.text
    np.savez(tmp_path / "wide.npz", images=images.astype(np.int32) + 70_000, labels=np.arange(40) % 2)
    with pytest.raises(DataError, match=r"integer pixels must lie in \[0, 255\].*an npz `levels` key"):
        prepare(params(tmp_path, source=f"npz:{tmp_path / 'wide.npz'}"))


def test_npz_source_channels_last_and_float(tmp_path):
    rng = np.random.default_rng(0)
    f = tmp_path / "d.npz"
    np.savez(f, images=rng.random((40, 6, 6, 3)).astype(np.float32), labels=np.repeat([3, 7], 20))
    m = prepare(params(tmp_path, source=f"npz:{f}"))
    assert m["shape"] == [3, 6, 6] and m["levels"] == 256 and m["class_names"] == ["3", "7"]
    m = prepare(params(tmp_path, source=f"npz:{f}", channels=1, image_size=4))
    assert m["shape"] == [1, 4, 4]


def test_npz_string_labels_are_the_class_names(tmp_path):
    """Labels as strings (as many datasets store them): the classes are their sorted names."""
    from genzoo.tasks.prepare import load_npz_source

    f = tmp_path / "s.npz"
    labels = np.array(["dog", "cat", "bird"] * 10)
    np.savez(f, images=np.zeros((30, 5, 5), np.uint8), labels=labels)
    ds = load_npz_source(f)
    assert ds.class_names == ["bird", "cat", "dog"] and ds.labels[:3].tolist() == [2, 1, 0]
    utf8 = np.array([n.encode() for n in ["café", "cat", "dog"] * 10])  # bytes, as h5py gives them
    np.savez(f, images=np.zeros((30, 5, 5), np.uint8), labels=utf8)
    assert load_npz_source(f).class_names == ["café", "cat", "dog"]


def test_class_names_of_a_class_with_no_image_are_left_out_and_the_others_keep_theirs(tmp_path):
    """A synthetic dataset's images.npz names every class, an emptied one too (its labels 0 and
    2 of names zero, one, two): preparing from it stopped at '3 names for 2 classes'."""
    from genzoo.tasks.prepare import load_npz_source

    f = tmp_path / "images.npz"
    labels = np.array([0, 2] * 5)
    np.savez(f, images=np.zeros((10, 1, 4, 4), np.uint8), labels=labels, class_names=["zero", "one", "two"])
    with logged("genzoo.prepare") as lines:
        ds = load_npz_source(f)
    assert ds.class_names == ["zero", "two"] and ds.labels[:2].tolist() == [0, 1]
    assert any("1 class(es) of class_names with no image left out (one)" in m for m in lines), lines
    np.savez(f, images=np.zeros((10, 1, 4, 4), np.uint8), labels=labels + 5, class_names=["a", "b", "c"])
    with pytest.raises(DataError, match="3 names for 2 classes"):  # labels beyond the names: not indices
        load_npz_source(f)


def test_max_levels_bins_256_levels_into_fewer_and_leaves_coarser_data_alone(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 5, 5)).astype(np.uint8)
    f = tmp_path / "d.npz"
    np.savez(f, images=images, labels=np.repeat([0, 1], 30))
    m = prepare(params(tmp_path, source=f"npz:{f}", max_levels=32))
    assert m["levels"] == 32  # 5 bits, as Glow's n_bits=5: level k -> floor(k * 32 / 256) = k >> 3
    got = np.concatenate(
        [load_split(tmp_path / "prepared", s)[0].numpy().ravel() for s in ("train", "val", "test")]
    )
    assert np.array_equal(
        np.bincount(np.rint(got * 31).astype(int), minlength=32), np.bincount((images >> 3).ravel())
    )
    assert prepare(params(tmp_path, max_levels=32))["levels"] == 17  # digits: 17 levels, kept


def _bad_npz(tmp_path, **arrays):
    f = tmp_path / "bad.npz"
    np.savez(f, **arrays)
    return f"npz:{f}"


BAD = {
    "empty folder": (lambda t: (t / "e" / "a").mkdir(parents=True) or f"folder:{t / 'e'}", "empty"),
    "no class folders": (lambda t: (t / "f").mkdir() or f"folder:{t / 'f'}", "no class sub-folders"),
    "single class": (lambda t: f"folder:{_folder(t / 's', classes=('only',))}", "single class"),
    "non-image file": (
        lambda t: (_folder(t / "n"), (t / "n" / "a" / "notes.txt").write_text("x")) and f"folder:{t / 'n'}",
        "notes.txt: not an image",
    ),
    "non-image files in several classes": (  # all named at once (one a run: a retry each)
        lambda t: (
            (
                _folder(t / "m", classes=("a", "b", "c")),
                (t / "m" / "a" / "notes.txt").write_text("x"),
                (t / "m" / "c" / "data.csv").write_text("x"),
                (t / "m" / "c" / "raw.cr2").write_bytes(b"x"),
            )
            and f"folder:{t / 'm'}"
        ),
        "m: 3 files in the class folders are no image files (a/notes.txt, c/data.csv, c/raw.cr2); move them "
        "out of the data folder",
    ),
    "unreadable image": (
        lambda t: (
            (_folder(t / "u"), (t / "u" / "b" / "broken.png").write_bytes(b"nope")) and f"folder:{t / 'u'}"
        ),
        "broken.png: unreadable image (UnidentifiedImageError); replace them or move them out of the folder",
    ),
    "a folder given as an npz": (
        lambda t: f"npz:{_folder(t / 'd')}",
        "a folder, not an npz file; give folder:",
    ),
    "an npz given as a folder": (
        lambda t: _bad_npz(t, x=np.zeros(1)).replace("npz:", "folder:"),
        "bad.npz: a file, not a folder (data.source folder:PATH); give npz:",
    ),
    "NaN pixels": (
        lambda t: _bad_npz(t, images=np.full((4, 5, 5), np.nan, np.float32), labels=np.array([0, 1, 0, 1])),
        "NaN",
    ),
    "wrong npz keys": (
        lambda t: _bad_npz(t, x=np.zeros((4, 5, 5)), y=np.zeros(4, int)),
        "missing key(s) ['images', 'labels']",
    ),
    "label count": (
        lambda t: _bad_npz(t, images=np.zeros((4, 5, 5), np.uint8), labels=np.zeros(3, int)),
        "expected 4 integer labels",
    ),
    "string labels and class names": (
        lambda t: _bad_npz(
            t,
            images=np.zeros((4, 5, 5), np.uint8),
            labels=np.array(["a", "b", "a", "b"]),
            class_names=np.array(["x", "y"]),
        ),  # fmt: skip
        "the labels are strings, their own class names",
    ),
    "missing file": (lambda t: f"npz:{t / 'nothing.npz'}", "not found"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_fails_clearly_and_writes_nothing(tmp_path, case):
    make, message = BAD[case]
    prepare(params(tmp_path))  # an earlier good dataset must survive the failure
    before = {p.name: p.read_bytes() for p in (tmp_path / "prepared").iterdir()}
    source = make(tmp_path)
    with pytest.raises(DataError, match=None) as e:
        prepare(params(tmp_path, source=source))
    assert message in str(e.value)
    assert before == {p.name: p.read_bytes() for p in (tmp_path / "prepared").iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".prepared")]


def _idx(path, arr):
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_style_files_are_read(tmp_path, name, folder):
    raw = tmp_path / "raw" / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    _idx(raw / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 28, 28)))
    _idx(raw / "train-labels-idx1-ubyte.gz", np.arange(20) % 10)
    _idx(raw / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (10, 28, 28)))
    _idx(raw / "t10k-labels-idx1-ubyte.gz", np.arange(10))
    ds = load_torchvision_source(name, tmp_path / "raw")
    assert ds.images.shape == (30, 1, 28, 28) and ds.levels == 256 and len(ds.class_names) == 10
    m = prepare(
        params(tmp_path, source=name, raw_dir=str(tmp_path / "raw"), image_size=14, test_fraction=0.34)
    )
    assert m["shape"] == [1, 14, 14]


def test_mnist_files_that_do_not_belong_together_are_refused_naming_them(tmp_path):
    """One label file short paired the last images with the test split's labels (268 of 1,697
    labels wrong, no error); swapped, mis-zipped or out-of-range files each name the file."""
    raw = tmp_path / "raw"
    folder = raw / "MNIST" / "raw"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (15, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(14) % 10,  # one short
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(10),
    }

    def write(**changed):
        for p in folder.iterdir():
            p.unlink()
        for stem, arr in {**files, **changed}.items():
            _idx(folder / f"{stem}.gz", arr)

    def refused(pattern):
        with pytest.raises(DataError, match=pattern):
            load_torchvision_source("mnist", raw)

    write()
    refused(r"train-images-idx3-ubyte.gz holds 15 images but .*train-labels-idx1-ubyte.gz 14 labels")
    write(**{"train-labels-idx1-ubyte": np.arange(15) % 10, "t10k-labels-idx1-ubyte": np.r_[0:9, 12]})
    refused(r"t10k-labels-idx1-ubyte.gz: label 12 at index 9 is not a class \(0..9\)")
    write(**{
        "train-images-idx3-ubyte": np.arange(15) % 10,
        "train-labels-idx1-ubyte": rng.integers(0, 256, (15, 28, 28)),
    })  # fmt: skip
    refused("are the image and label files swapped")
    write(**{"train-labels-idx1-ubyte": np.arange(15) % 10})
    assert load_torchvision_source("mnist", raw).images.shape == (25, 1, 28, 28)  # as they belong
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x00\x00\x08\x03 not gzipped")
    refused(r"t10k-images-idx3-ubyte.gz: not a readable gzip file, as its name says")
    (folder / "t10k-images-idx3-ubyte.gz").rename(folder / "t10k-images-idx3-ubyte")
    _idx(folder / "t10k-images-idx3-ubyte.gz", files["t10k-images-idx3-ubyte"])
    (folder / "t10k-images-idx3-ubyte.gz").rename(folder / "t10k-images-idx3-ubyte")  # gzipped, no .gz
    refused(r"t10k-images-idx3-ubyte: a gzip file without .gz in its name; name it t10k-images-idx3-ubyte.gz")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.MonkeyPatch.context() as m:
        m.setitem(__import__("sys").modules, "torchvision", None)  # not installed: nothing downloads
        m.setitem(__import__("sys").modules, "torchvision.datasets", None)
        refused(rf"{folder} lacks t10k-labels-idx1-ubyte\[.gz\] \(data.raw_dir={raw}\)")

    class Broken:  # PyPI's torchvision beside a +cpu torch: installed, and its import fails
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "torchvision":
                raise RuntimeError("operator torchvision::nms does not exist")

    with pytest.MonkeyPatch.context() as m:
        m.delitem(__import__("sys").modules, "torchvision", raising=False)
        m.delitem(__import__("sys").modules, "torchvision.datasets", raising=False)
        m.setattr(__import__("sys"), "meta_path", [Broken(), *__import__("sys").meta_path])
        refused(r"the torchvision installed does not load beside this torch \(operator torchvision::nms")


def test_cifar_batches_are_read_and_pickled_code_is_refused(tmp_path):
    folder = tmp_path / "raw" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for b in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        (folder / b).write_bytes(pickle.dumps(d))
    ds = load_torchvision_source("cifar10", tmp_path / "raw")
    assert ds.images.shape == (24, 3, 32, 32) and ds.class_names[0] == "airplane"
    good = (folder / "data_batch_2").read_bytes()
    short = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2]}
    (folder / "data_batch_2").write_bytes(pickle.dumps(short))
    with pytest.raises(DataError, match="data_batch_2 holds 4 images but .*data_batch_2 3 labels"):
        load_torchvision_source("cifar10", tmp_path / "raw")
    (folder / "data_batch_2").write_bytes(pickle.dumps(short | {b"labels": [0, 1, -1, 2]}))
    with pytest.raises(DataError, match=r"data_batch_2: label -1 at index 2 is not a class \(0..9\)"):
        load_torchvision_source("cifar10", tmp_path / "raw")
    (folder / "data_batch_2").write_bytes(good)

    class Payload:
        def __reduce__(self):
            return (eval, ("1 + 1",))  # eval: print may be wrapped by Ray in this process

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Payload()}))
    with pytest.raises(DataError, match="refusing to load builtins.eval"):
        load_torchvision_source("cifar10", tmp_path / "raw")


def test_missing_vision_files_without_torchvision_say_what_to_install(tmp_path, monkeypatch):
    import sys

    for mod in ("torchvision", "torchvision.datasets"):
        monkeypatch.setitem(sys.modules, mod, None)  # import fails as if not installed
    with pytest.raises(DataError, match="genzoo\\[vision\\]"):
        load_torchvision_source("mnist", tmp_path / "raw")


def test_manifest_is_json_with_class_names(tmp_path):
    prepare(params(tmp_path))
    m = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert m["class_names"] == [str(i) for i in range(10)] and m["num_classes"] == 10


# ----------------------------------------------------------------------------- what prepare may replace


def _genzoo(tmp_path, *args):
    """The real command line, in its own process: `genzoo prepare ...` in tmp_path."""
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump({"models": {"vae": {}}}))
    return subprocess.run(
        [str(BIN / "genzoo"), *args, "-q", "--params", str(pfile)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_prepare_refuses_a_folder_it_did_not_write_and_keeps_it(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    r = _genzoo(tmp_path, "prepare", "-o", f"data.prepared_dir={mine}")
    assert r.returncode == 2, r.stdout + r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"genzoo prepare: error: {mine}: not a genzoo prepared-data folder"), r.stderr
    assert "move it away or choose another path" in last
    assert (mine / "notes.txt").read_text() == "my notes" and [p.name for p in mine.iterdir()] == [
        "notes.txt"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "params.yaml"]  # nothing beside it


def test_prepare_replaces_its_own_folder_marked_or_from_before_the_mark(tmp_path):
    out = tmp_path / "prepared"
    r = _genzoo(tmp_path, "prepare", "-o", f"data.prepared_dir={out}")
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["made_by"] == "genzoo" and m["kind"] == "prepared-data" and m["version"]
    # the form genzoo wrote before the mark: the same files, the manifest without its three keys
    legacy = {k: v for k, v in m.items() if k not in ("made_by", "kind", "version")}
    (out / "manifest.json").write_text(json.dumps(legacy))
    assert prepare(params(tmp_path))["made_by"] == "genzoo"
    # a genzoo folder a user put a file into is theirs too now
    (out / "notes.txt").write_text("mine")
    r = _genzoo(tmp_path, "prepare", "-o", f"data.prepared_dir={out}")
    assert r.returncode == 2 and "holds notes.txt, which genzoo did not write" in r.stderr
    assert (out / "notes.txt").read_text() == "mine"


def test_a_class_folder_linking_out_of_the_data_folder_is_refused(tmp_path):
    root = _folder(tmp_path / "imgs")
    (root / "c").symlink_to(root, target_is_directory=True)  # a class folder that links to its parent
    loop = f"{root / 'c'}: a symbolic link to {root.resolve()}, which holds the class folders"
    with pytest.raises(DataError, match=loop):
        prepare(params(tmp_path, source=f"folder:{root}"))
    (root / "c").unlink()
    outside = _folder(tmp_path / "outside", classes=("x",))
    (root / "a" / "leak.png").symlink_to(next((outside / "x").iterdir()))
    with pytest.raises(DataError, match="leak.png: a symbolic link to .*outside the data folder"):
        prepare(params(tmp_path, source=f"folder:{root}"))
    (root / "a" / "leak.png").unlink()
    # inside the data folder but another class's: its images would carry two labels
    (root / "c").symlink_to(root / "a", target_is_directory=True)
    with pytest.raises(
        DataError, match=f"{root / 'c'}: a symbolic link to .*inside the class folder {root / 'a'}"
    ):
        prepare(params(tmp_path, source=f"folder:{root}"))
    (root / "c").unlink()
    (root / "b" / "twin.png").symlink_to(next((root / "a").iterdir()))
    with pytest.raises(
        DataError, match="twin.png: a symbolic link to .*inside the class folder .*two classes"
    ):
        prepare(params(tmp_path, source=f"folder:{root}"))
    assert not (tmp_path / "prepared").exists()
    (root / "b" / "twin.png").unlink()
    # a link that leads back to itself: one line naming it (Python's resolve raised a RuntimeError)
    (root / "b" / "loop.png").symlink_to(root / "b" / "loop.png")
    with pytest.raises(DataError, match="loop.png: a symbolic link that leads back to itself; remove it"):
        prepare(params(tmp_path, source=f"folder:{root}"))
    (root / "b" / "loop.png").unlink()
    # links into a hidden store at the top (git-annex, .pool/) are no other class's: read
    (root / ".pool" / "cs").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((12, 10), 40 * i, np.uint8), "L").save(root / ".pool" / "cs" / f"{i}.png")
    (root / "c").symlink_to(root / ".pool" / "cs", target_is_directory=True)
    Image.fromarray(np.full((12, 10), 7, np.uint8), "L").save(root / ".pool" / "loose.png")
    (root / "a" / "pooled.png").symlink_to(root / ".pool" / "loose.png")
    (root / "b" / "thumbs.db").symlink_to(
        root / ".pool" / "cs" / "1.png"
    )  # a file manager's name: passed over
    m = prepare(params(tmp_path, source=f"folder:{root}"))
    assert m["class_names"] == ["a", "b", "c"]
    assert sum(np.sum([v["per_class"] for v in m["splits"].values()], axis=0)) == 6 + 1 + 6 + 4


def test_a_file_managers_files_are_passed_over_and_a_home_path_is_expanded(tmp_path, monkeypatch):
    """Thumbs.db / desktop.ini in a class folder stopped prepare as "not an image file"; a
    source written `folder: PATH` (YAML: a mapping) or with ~ is said or read as meant."""
    folder = _folder(tmp_path / "home" / "imgs")
    (folder / "a" / "Thumbs.db").write_bytes(b"cache")
    (folder / "b" / "desktop.ini").write_text("[view]")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    p = params(tmp_path, source="folder:~/imgs")
    assert p.data.source == "folder:~/imgs"  # kept as written (another machine's home is another)
    assert prepare(p)["num_classes"] == 2
    from genzoo.tasks.config import ParamsError, validate

    with pytest.raises(ParamsError, match="data.source: write folder:PATH with no space after the colon"):
        validate({"data": {"source": {"folder": str(folder)}}, "models": {"vae": {}}})


def test_integer_labels_not_counted_from_0_are_said_to_be_renumbered(tmp_path, caplog):
    """An npz labelled 1, 2, 3: classes 0, 1, 2 named '1', '2', '3', said once at prepare
    (`--class 1` is the class named '1', Python's label=1 the class at index 1)."""
    import logging

    f = tmp_path / "odd.npz"
    np.savez(f, images=np.zeros((6, 5, 5), np.uint8), labels=np.array([1, 2, 3, 1, 2, 3]))
    with caplog.at_level(logging.WARNING, logger="genzoo.prepare"):
        m = prepare(params(tmp_path, source=f"npz:{f}", test_fraction=0.4))
    assert m["class_names"] == ["1", "2", "3"]
    assert "integer labels 1, 2, 3 are not 0..2" in caplog.text and "('1' is class 0)" in caplog.text
    caplog.clear()
    np.savez(f, images=np.zeros((6, 5, 5), np.uint8), labels=np.array([0, 1, 2, 0, 1, 2]))
    with caplog.at_level(logging.WARNING, logger="genzoo.prepare"):
        prepare(params(tmp_path, source=f"npz:{f}", test_fraction=0.4))
    assert "not 0.." not in caplog.text


def test_the_data_params_a_folder_was_prepared_with_are_compared_by_what_they_make(tmp_path):
    """`genzoo train` refuses params that ask for other data than the prepared folder holds; a
    value that makes the same data of the source is no difference (the quick profile's
    max_levels 32 keeps digits' 17 levels), so it never asks for a needless `genzoo prepare`."""
    from genzoo.tasks.data import not_as_asked, read_manifest

    p = params(tmp_path)
    manifest = prepare(p) and read_manifest(p.data.prepared_dir)
    same = {"max_levels": 32, "channels": 1, "image_size": 8, "max_per_class": 1000}
    other = {"max_levels": 8, "channels": 3, "image_size": 16, "max_per_class": 50, "val_fraction": 0.2}
    for key, value in same.items():
        assert not_as_asked(params(tmp_path, **{key: value}).data, manifest) == [], key
    for key, value in other.items():
        said = not_as_asked(params(tmp_path, **{key: value}).data, manifest)
        assert len(said) == 1 and said[0].startswith(f"data.{key}: "), (key, said)
    assert not_as_asked(params(tmp_path, source="folder:x").data, manifest) == [
        "data.source: digits -> folder:x"
    ]
    # prepared with values the source already has: asked without them, the same data
    converted = params(tmp_path, channels=1, image_size=8)
    prepare(converted)
    assert not_as_asked(params(tmp_path).data, read_manifest(converted.data.prepared_dir)) == []
    del manifest["data"]  # a folder prepared before the data keys were recorded: its source alone
    assert not_as_asked(params(tmp_path, val_fraction=0.2).data, manifest) == []


def test_float_images_too_large_and_cut_short_images_are_read_or_said(tmp_path, monkeypatch, caplog):
    """Float pixels (a mode-F TIFF in [0, 1]) are scaled to 0-255 (convert() made them black); an
    image Pillow refuses as too large to load, and one cut short, are one line naming the file
    and why, not a traceback or a bare class name."""
    from genzoo.tasks.data import load_split

    root = _folder(tmp_path / "f", n=4, size=(8, 8))
    for i in range(4):
        Image.fromarray(np.full((8, 8), 0.25 * i + 0.2, np.float32), "F").save(root / "a" / f"{i}.tif")
        (root / "a" / f"{i}.png").unlink()
    with caplog.at_level("WARNING", logger="genzoo.prepare"):
        prepare(params(tmp_path, source=f"folder:{root}", test_fraction=0.25, val_fraction=0.25))
    assert "images of float pixels (first: " in caplog.text
    x = torch.cat([load_split(tmp_path / "prepared", s)[0] for s in ("train", "val", "test")])
    y = torch.cat([load_split(tmp_path / "prepared", s)[1] for s in ("train", "val", "test")])
    means = sorted(round(float(v) * 255) for v in x[y == 0].mean(dim=(1, 2, 3)))
    assert means == [51, 115, 178, 242]  # 0.2, 0.45, 0.7, 0.95 of 255, rounded (black: all 0)
    shutil.rmtree(tmp_path / "prepared")
    Image.fromarray(np.full((8, 8), 200.0, np.float32), "F").save(root / "a" / "bright.tif")  # 0-255 beside
    with pytest.raises(
        DataError, match=r"float images of two ranges: .* is float \[0, 1\], .*bright.tif is float 0-255"
    ):
        prepare(params(tmp_path, source=f"folder:{root}", test_fraction=0.25, val_fraction=0.25))
    big = _folder(tmp_path / "big", n=4, size=(8, 8))
    Image.fromarray(np.zeros((40, 40), np.uint8), "L").save(big / "b" / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 1,600 pixels: over twice the limit
    with pytest.raises(DataError, match=r"huge.png: Image size \(1600 pixels\) exceeds limit .*shrink it"):
        prepare(params(tmp_path, source=f"folder:{big}"))
    monkeypatch.undo()
    (big / "b" / "huge.png").unlink()
    whole = (big / "b" / "0.png").read_bytes()
    (big / "b" / "0.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"0.png: unreadable image \(OSError: .*truncated"):
        prepare(params(tmp_path, source=f"folder:{big}"))
    # every unreadable file named at once (a user fixed one and met the next on the following try)
    (big / "a" / "1.png").write_bytes(b"nope")
    two = r"big: 2 unreadable image file\(s\): .*1.png: unreadable .*0.png: unr"
    with pytest.raises(DataError, match=two):
        prepare(params(tmp_path, source=f"folder:{big}"))
