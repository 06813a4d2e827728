"""JAX's persistent compilation cache under vtabkit's cache folder, and counting compilations.

A run compiles each probe's solver once per shape bucket; the persistent cache lets a second
run on the same machine load those executables from disk instead of compiling them again.
It is switched on by the runner (not at import: a library should not change JAX's settings
just by being imported), and only where the user has not chosen a cache folder of their own.
"""

from __future__ import annotations

import threading
from pathlib import Path

import jax
from jax._src import compilation_cache as _jax_cache

from vtabkit.paths import cache_dir

# Compiles that take less than this are not worth a disk entry (JAX's own default is 1 s,
# which would leave the small solver compiles of a probe out of the cache).
MIN_COMPILE_SECONDS = 0.0

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # every XLA compile request
_HIT_EVENT = "/jax/compilation_cache/cache_hits"  # requests served from the persistent cache

_ours: str | None = None  # the folder vtabkit set, so that a later call may move it (tests do)
_lock = threading.Lock()
_counts = {"requests": 0, "hits": 0, "seconds": 0.0}
_listening = False


def default_dir() -> Path:
    return cache_dir() / "jax"


def directory() -> Path | None:
    """The folder JAX's persistent cache uses now, or would use once vtabkit enables it."""
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return Path(configured)
    return default_dir() if jax.config.jax_enable_compilation_cache else None


def enable() -> Path | None:
    """Point JAX's persistent compilation cache at ``cache_dir()/jax``, unless already configured.

    A folder the user set (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is kept, and a cache
    the user disabled (``jax_enable_compilation_cache=False``) stays off. Returns the folder in use.
    """
    global _ours
    listen()
    if not jax.config.jax_enable_compilation_cache:
        return None
    configured = jax.config.jax_compilation_cache_dir
    if configured and configured != _ours:
        return Path(configured)
    wanted = str(default_dir())
    if configured != wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", wanted)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
        # JAX opens its cache once per process; a new folder needs a fresh start.
        _jax_cache.reset_cache()
        _ours = wanted
    return Path(wanted)


def _on_event(event: str, **_) -> None:
    if event == _HIT_EVENT:
        with _lock:
            _counts["hits"] += 1


def _on_duration(event: str, seconds: float, **_) -> None:
    if event == _COMPILE_EVENT:
        with _lock:
            _counts["requests"] += 1
            _counts["seconds"] += seconds


def listen() -> None:
    """Start counting compilations (once per process; listeners cannot be scoped to a run)."""
    global _listening
    with _lock:
        if _listening:
            return
        _listening = True
    jax.monitoring.register_event_listener(_on_event)
    jax.monitoring.register_event_duration_secs_listener(_on_duration)


class CompileCounter:
    """Compilations since the last ``take()``: XLA compiles done, and ones loaded from the cache."""

    def __init__(self) -> None:
        listen()
        self._last = self._now()

    @staticmethod
    def _now() -> dict[str, float]:
        with _lock:
            return dict(_counts)

    def take(self) -> dict[str, float]:
        now = self._now()
        delta = {key: now[key] - self._last[key] for key in now}
        self._last = now
        return {"compilations": int(delta["requests"] - delta["hits"]), "compile_cache_hits": int(delta["hits"]),
                "compile_s": float(delta["seconds"])}


def summary(path: Path | None = None) -> str:
    """One line: how many entries and MB the compilation cache holds, and where."""
    path = path or directory()
    if path is None:
        return "JAX compilation cache: disabled (jax_enable_compilation_cache is false)"
    files = [f for f in path.iterdir() if f.is_file()] if path.is_dir() else []
    size = sum(f.stat().st_size for f in files) / 1e6
    entries = sum(f.name.endswith("-cache") for f in files)  # beside each: a "-atime" stamp
    return f"JAX compilation cache: {entries} entries, {size:.1f} MB in {path}"
