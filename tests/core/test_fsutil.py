"""Atomic writes leave files a reader can read: ordinary permissions, not mkstemp's private 0600."""

import os
import stat

from poetwb.core.fsutil import atomic_write_text


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "poems.md", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "poems.md").stat().st_mode) == 0o644


def test_a_replaced_file_keeps_its_mode(tmp_path):
    target = tmp_path / "status.json"
    target.write_text("{}")
    target.chmod(0o640)
    atomic_write_text(target, "{}")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
