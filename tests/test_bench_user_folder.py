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
