"""bench/ddim.py --run takes bench/families.py's run folders and a checkout after `genzoo run`."""

from tests.conftest import load_bench


def test_a_run_folder_or_a_checkout_gives_its_prepared_data(tmp_path):
    ddim = load_bench("ddim")
    (tmp_path / "run0" / "prepared").mkdir(parents=True)
    assert ddim.prepared_of(tmp_path / "run0") == tmp_path / "run0" / "prepared"
    (tmp_path / "checkout" / "data" / "prepared").mkdir(parents=True)
    assert ddim.prepared_of(tmp_path / "checkout") == tmp_path / "checkout" / "data" / "prepared"
