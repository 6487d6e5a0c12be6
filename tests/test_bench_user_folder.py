"""bench/user_folder.py's folder: what a new user brings, RGB or one channel, 25 to 32 pixels a side."""

import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from user_folder import make_folder  # noqa: E402


def test_the_folder_holds_two_classes_of_rgb_or_grey_images_of_25_to_32_pixels(tmp_path):
    for gray, mode in ((False, "RGB"), (True, "L")):
        root = make_folder(tmp_path / mode, 12, gray=gray)
        images = sorted(root.rglob("*.png"))
        assert sorted(p.name for p in root.iterdir()) == ["discs", "squares"] and len(images) == 12
        for p in images:
            with Image.open(p) as im:
                assert im.mode == mode and im.size[0] == im.size[1] and 25 <= im.size[0] <= 32


def test_the_mnist_like_npz_is_every_digit_at_28x28_in_ten_classes(tmp_path):
    import numpy as np
    from user_folder import make_mnist_like

    with np.load(make_mnist_like(tmp_path / "d.npz")) as z:
        images, labels = z["images"], z["labels"]
    assert images.shape == (1797, 28, 28) and images.dtype == np.uint8 and images.max() == 255
    assert sorted(set(labels.tolist())) == list(range(10)) and len(labels) == 1797
