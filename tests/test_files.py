import os
import stat
from pathlib import Path

import pytest

from dlcv.errors import UserError
from dlcv.files import atomic_path, staged_dir, write_text_atomic
from tests.conftest import run_cli


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "a.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_atomic_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o644


def test_staged_dir_publishes_only_on_success(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(ValueError), staged_dir(target) as stage:
        (stage / "one.png").write_text("1")
        raise ValueError("bad input found halfway")
    assert not target.exists()
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with staged_dir(target) as stage:
        (stage / "one.png").write_text("1")
    assert sorted(os.listdir(target)) == ["keep.txt", "one.png"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


@pytest.mark.parametrize("write", ["file", "folder"])
def test_an_output_where_a_file_or_folder_stands_in_the_way_is_one_error_naming_it(tmp_path, write):
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file.csv").write_text("keep")
    in_the_way = tmp_path / ("a_folder" if write == "file" else "a_file.csv")
    writer = atomic_path if write == "file" else staged_dir
    for target, culprit in ((in_the_way, in_the_way), (tmp_path / "a_file.csv" / "x" / "y", tmp_path / "a_file.csv")):
        with pytest.raises(UserError) as raised, writer(target):
            pytest.fail("the block must not run")
        assert str(raised.value).startswith(f"{culprit}: ")
    assert (
        sorted(os.listdir(tmp_path)) == ["a_file.csv", "a_folder"] and (tmp_path / "a_file.csv").read_text() == "keep"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_folder_that_refuses_writes_is_one_error_naming_it(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(UserError, match=f"^{locked}: cannot write here"), atomic_path(locked / "a.txt"):
        pytest.fail("the block must not run")
    with (
        pytest.raises(UserError, match=f"^{locked / 'sub'}: cannot create this folder"),
        staged_dir(locked / "sub" / "x"),
    ):
        pytest.fail("the block must not run")


def test_results_publish_into_a_file_is_one_error(tmp_path, capsys):
    results = Path(__file__).resolve().parents[1] / "docs" / "results.csv"
    (tmp_path / "docs").write_text("not a folder")
    status, _, err = run_cli(capsys, "results", "publish", results, "--docs", tmp_path / "docs")
    assert status == 2 and err.count("\n") == 1 and err.startswith(f"error: {tmp_path / 'docs'}: a file"), err
    assert (tmp_path / "docs").read_text() == "not a folder"


def test_distinct_names_add_parent_folders_until_the_names_differ(tmp_path):
    from dlcv.files import distinct_names

    paths = [tmp_path / "a" / "x" / "run", tmp_path / "b" / "x" / "run", tmp_path / "b" / "fcn8s", tmp_path / "run2"]
    assert distinct_names(paths) == ["a/x/run", "b/x/run", "fcn8s", "run2"]
