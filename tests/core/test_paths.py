import os
from pathlib import Path

import pytest

from poetwb.core import paths
from poetwb.core.errors import PoetError
from poetwb.core.fsutil import atomic_dir, atomic_write_json


def test_locations_follow_poetwb_home(poet_home):
    assert paths.data_dir() == poet_home / "data"
    assert paths.runs_dir() == poet_home / "data" / "runs"


@pytest.mark.parametrize("bad", ["../escape", "a/b", "..", "", ".hidden", "x" * 81, "a\\b", "/abs"])
def test_run_ids_cannot_escape_the_runs_folder(bad):
    with pytest.raises(PoetError, match="invalid run id"):
        paths.run_dir(bad)


def test_plain_run_id_maps_inside_runs():
    assert paths.run_dir("sonnets-2026.1").parent == paths.runs_dir().resolve()


def test_atomic_dir_failure_leaves_target_untouched(tmp_path):
    target = tmp_path / "adapter"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("crash halfway")
    assert (target / "a.txt").read_text() == "first"
    assert sorted(os.listdir(tmp_path)) == ["adapter"]


def test_atomic_write_json_replaces_whole_file(tmp_path):
    p = tmp_path / "status.json"
    atomic_write_json(p, {"state": "running"})
    atomic_write_json(p, {"state": "finished"})
    assert '"finished"' in p.read_text()
    assert [f.name for f in tmp_path.iterdir()] == ["status.json"]


def test_assets_dir_has_the_prompt_set():
    assert (paths.assets_dir() / "prompts.toml").is_file()
    assert isinstance(paths.assets_dir(), Path)
