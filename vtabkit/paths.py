"""Where vtabkit's shipped YAML definitions and its caches live."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def definitions_dir(kind: str) -> Path:
    """The shipped ``tasks`` or ``protocols`` folder.

    A non-editable install carries them as ``vtabkit/_tasks`` and ``vtabkit/_protocols``;
    a source checkout (or editable install) has them at the top of the repository.
    """
    installed = _PACKAGE / f"_{kind}"
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / kind


def cache_dir() -> Path:
    """Root of vtabkit's on-disk caches (features, downloaded checkpoints)."""
    root = os.environ.get("VTABKIT_CACHE") or Path.home() / ".cache" / "vtabkit"
    return Path(root)


def default_data_dir() -> str | None:
    """The TFDS data dir, from ``TFDS_DATA_DIR`` when set (TFDS's own default otherwise)."""
    return os.environ.get("TFDS_DATA_DIR") or None


def readable_mode(handle: int) -> None:
    """Give a `tempfile.mkstemp` file the mode a plain ``open`` would (0666 less the umask).

    mkstemp makes files 0600; results, predictions and cache entries renamed from one must stay
    readable by whoever may read the run directory or share the cache (a leaderboard, a colleague).
    """
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(handle, 0o666 & ~umask)
