"""Where poetwb keeps things: platformdirs locations, the POETWB_HOME override, safe run ids, bundled assets."""

from __future__ import annotations

import os
import re
from pathlib import Path

import platformdirs

from poetwb.core.errors import PoetError

APP = "poetwb"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


def _home() -> Path | None:
    value = os.environ.get("POETWB_HOME")
    return Path(value).expanduser() if value else None


def data_dir() -> Path:
    """Adapters, runs and poems. POETWB_HOME/data when set, else the platform's user data dir."""
    home = _home()
    return home / "data" if home else platformdirs.user_data_path(APP)


def cache_dir() -> Path:
    """Converted models and other things that can be rebuilt. POETWB_CACHE, else POETWB_HOME/cache when set."""
    if value := os.environ.get("POETWB_CACHE"):
        return Path(value).expanduser()
    home = _home()
    return home / "cache" if home else platformdirs.user_cache_path(APP)


def runs_dir() -> Path:
    return data_dir() / "runs"


def check_run_id(run_id: str) -> str:
    """Return run_id if it is a plain name that cannot escape the runs folder, else raise PoetError."""
    if not _RUN_ID.match(run_id) or ".." in run_id:
        raise PoetError(
            f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' only (no slashes, at most 80)"
        )
    return run_id


def run_dir(run_id: str) -> Path:
    root = runs_dir().resolve()
    path = (root / check_run_id(run_id)).resolve()
    if not path.is_relative_to(root) or path == root:
        raise PoetError(f"invalid run id {run_id!r}: it points outside the runs folder")
    return path


def assets_dir() -> Path:
    """The assets folder: inside the installed package (wheel), or at the repository root (editable install)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "assets", here.parent / "assets"):
        if candidate.is_dir():
            return candidate
    raise PoetError("poetwb's assets folder is missing: reinstall poetwb")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (tests point it elsewhere)."""
    if value := os.environ.get("HF_HUB_CACHE"):
        return Path(value).expanduser()
    if value := os.environ.get("HF_HOME"):
        return Path(value).expanduser() / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "huggingface" / "hub"


def hub_offline() -> bool:
    """True when the user asked huggingface_hub to stay offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(
        os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
