"""A quiet terminal: a `vtabkit` command prints vtabkit's own lines and progress bars only.

TensorFlow's C++ start-up lines (absl, CPU-feature and oneDNN notes), Python warnings with
source paths and library log records say nothing to a user and, printed in front of an error,
hide it. TFDS's own prints and shuffling bars (with long temporary paths) add nothing while
vtabkit generates its offline datasets in seconds. Imports no other vtabkit module.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from typing import Iterator

# Library loggers that print to stderr through Python's last-resort handler (e.g. JAX's
# "no GPU/TPU found" note). Errors still come through.
_LIBRARY_LOGGERS = ("absl", "jax", "jax._src.xla_bridge", "tensorflow", "tensorflow_datasets", "tfds",
                    "etils", "h5py", "PIL", "matplotlib", "urllib3")


def quiet_command_line() -> None:
    """Silence library chatter for one CLI process; call before TensorFlow is imported.

    The environment variables only take effect if set before TensorFlow's C++ library loads,
    so the CLI calls this first. A user's own ``TF_CPP_MIN_LOG_LEVEL`` or ``-W``/``PYTHONWARNINGS``
    wins, so debugging stays possible.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if not sys.warnoptions:
        warnings.simplefilter("ignore")
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass


@contextlib.contextmanager
def stderr_fd_silenced(replay_on_error: bool = True) -> Iterator[None]:
    """Discard what C/C++ code writes to file descriptor 2 inside the block.

    Python's ``sys.stderr`` redirection cannot catch it. On an exception the captured text is
    replayed (``replay_on_error``), so a failing import still explains itself; callers that turn
    the exception into their own one-line error pass False.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (e.g. some embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            if replay_on_error:
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow (and TFDS) with its C++ start-up lines discarded.

    Some builds print absl/CPU-feature lines at load time whatever ``TF_CPP_MIN_LOG_LEVEL``
    says; after this, later imports are free and print nothing.
    """
    with stderr_fd_silenced():
        import tensorflow  # noqa: F401
        import tensorflow_datasets  # noqa: F401


@contextlib.contextmanager
def tfds_silenced() -> Iterator[None]:
    """TFDS's prints ("Downloading and preparing dataset ...") and progress bars off in the block.

    For vtabkit's own offline builders, which generate in seconds; vtabkit logs its own line.
    """
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.utils import tqdm_utils

    was_active = getattr(tqdm_utils, "_active", True)
    tfds.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        tfds.display_progress_bar(was_active)


def prepare_silently(builder, **kwargs) -> None:
    """``builder.download_and_prepare(**kwargs)`` without TFDS's prints and bars."""
    with tfds_silenced():
        builder.download_and_prepare(**kwargs)
