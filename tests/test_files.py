import os
import stat

import pytest

from dlcv.files import atomic_path, staged_dir, write_text_atomic


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
