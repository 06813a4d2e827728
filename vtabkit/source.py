"""The data source: TFDS builders opened with TensorFlow kept off accelerators, split arithmetic.

Everything that reads or prepares a dataset goes through `open_builder` here, so there is one
place that knows how a pinned ``name[/config]:version`` becomes a TFDS builder and what TFDS
says when it cannot. ``data`` (reading batches) and ``prepare`` (status, downloads) sit above it.
"""

from __future__ import annotations

import re
from pathlib import Path

from vtabkit.errors import UserError

OWN_PREFIX = "vtabkit_"  # vtabkit's own builders: generated offline, never downloaded

# `clevr-train.tfrecord-00003-of-00016__41`: the file format is not part of an example's identity.
_FORMAT_INFIX = re.compile(r"\.[A-Za-z_]+(?=-\d+-of-\d+__\d+$)")


def tf():
    """tensorflow, with accelerators hidden from it (JAX needs their memory) and its logger quiet."""
    import tensorflow

    tensorflow.get_logger().setLevel("ERROR")  # deprecation chatter from inside TFDS
    try:
        tensorflow.config.set_visible_devices([], "GPU")
    except RuntimeError:  # already initialised; devices were hidden on the first call
        pass
    return tensorflow


def tfds():
    """tensorflow_datasets, after `tf` has hidden the accelerators."""
    tf()
    import tensorflow_datasets

    return tensorflow_datasets


def first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def is_own(dataset: str) -> bool:
    """Whether ``dataset`` (``name[:version]``) is one of vtabkit's own offline builders."""
    return dataset.startswith(OWN_PREFIX)


def open_builder(dataset: str, data_dir: str | Path | None, owner: str = ""):
    """The TFDS builder of the pinned ``dataset`` (``name[/config]:version``), prepared or not.

    ``owner`` (e.g. ``"task 'dtd'"``) starts every error line. Raises `UserError` when TFDS does
    not know the dataset or the pinned version.
    """
    prefix = f"{owner}: " if owner else ""
    name, _, version = dataset.partition(":")
    datasets = tfds()
    if is_own(name):
        try:
            import vtabkit.builders  # noqa: F401  (registers vtabkit's own TFDS builders)
        except ImportError as error:
            raise UserError(f"{prefix}vtabkit's own dataset builders cannot be imported "
                            f"({first_line(error)}); reinstall vtabkit") from None
    try:
        return datasets.builder(name, version=version or None, data_dir=str(data_dir) if data_dir else None)
    except datasets.core.DatasetNotFoundError:
        raise UserError(f"{prefix}tensorflow-datasets {datasets.__version__} has no dataset {name!r}; "
                        "check the `dataset` field or upgrade tensorflow-datasets") from None
    except Exception as error:  # TFDS raises AssertionError/ValueError for unknown versions/configs
        message = first_line(error)
        offered = re.search(r"only: (.+?)\.?$", message)
        if offered:
            raise UserError(f"{prefix}tensorflow-datasets {datasets.__version__} cannot load {name} at "
                            f"version {version} (it offers {offered.group(1).strip()}); install a "
                            "tensorflow-datasets release that has it, or place a prepared copy in the "
                            "data dir") from None
        raise UserError(f"{prefix}TFDS cannot open {dataset} ({type(error).__name__}: {message})") from None


def is_prepared(builder) -> bool:
    """Whether TFDS has written this builder's version under its data dir."""
    return bool(builder.is_prepared())


def data_root(builder) -> Path:
    """The data dir that holds ``builder``'s dataset.

    Derived from the dataset folder (``<root>/<name>[/<config>]/<version>``) because TFDS opens a
    prepared dataset as a read-only builder whose ``data_dir_root`` is that folder itself.
    """
    data_path = Path(str(builder.data_path))
    depth = len(str(builder.info.full_name).split("/"))  # name[/config]/version
    return data_path.parents[depth - 1]


def split_sizes(builder) -> dict[str, int]:
    """Examples per TFDS split of a prepared builder."""
    return {name: int(info.num_examples) for name, info in builder.info.splits.items()}


def absolute_ranges(split: str, sizes: dict[str, int]) -> list[tuple[str, int, int]]:
    """The TFDS split string ``split`` as half-open example ranges ``(tfds_split, start, end)``.

    Resolved exactly as TFDS does (``tfds.core.ReadInstruction``, percent slices rounded to the
    closest example), against ``sizes`` (examples per TFDS split).
    """
    datasets = tfds()
    infos = {name: datasets.core.SplitInfo(name=name, shard_lengths=[count], num_bytes=0)
             for name, count in sizes.items()}
    try:
        instructions = datasets.core.ReadInstruction.from_spec(split).to_absolute(infos)
    except (ValueError, AssertionError) as error:
        raise UserError(f"split {split!r} does not fit TFDS splits {sizes}: {first_line(error)}") from None
    return [(part.splitname, part.from_ or 0, sizes[part.splitname] if part.to is None else part.to)
            for part in instructions]


def example_id(tfds_id: bytes | str) -> str:
    """An example's identity: its ``tfds_id`` without the file-format infix, so both storage
    formats (``.tfrecord``/``.array_record``) of one preparation name an example alike."""
    text = tfds_id.decode() if isinstance(tfds_id, bytes) else str(tfds_id)
    return _FORMAT_INFIX.sub("", text)


def ids_hash(ids) -> str:
    """Short sha256 (16 hex digits) of example ids in order, each followed by a newline."""
    import hashlib

    digest = hashlib.sha256()
    for value in ids:
        digest.update(str(value).encode() + b"\n")
    return digest.hexdigest()[:16]
