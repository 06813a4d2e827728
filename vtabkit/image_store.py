"""Decoded training images kept on disk, read back by row: fine-tuning's memory stays one batch.

Fine-tuning draws random batches from its training split for thousands of steps, so it needs
random access to decoded, resized images. Held in host memory, full CIFAR-100 at 224 px is
6.7 GB; here the images are written once, as fixed-size uint8 rows, to a file in the cell's
work directory, and every batch reads only its rows (``os.pread``, no memory map whose touched
pages would stay in the process). A store can be a subset of another (a data regime's rows) or
the concatenation of several (train + val for the final refit) without copying.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Iterable

import numpy as np

from vtabkit.errors import UserError


class ImageStore:
    """uint8 images of one shape, ``store[rows] -> (len(rows), H, W, 3)``, backed by files."""

    def __init__(self, files: list[Path], counts: list[int], image_shape: tuple[int, ...],
                 rows: np.ndarray | None = None):
        self.files, self.counts, self.image_shape = list(files), list(counts), tuple(image_shape)
        self._starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.rows = np.arange(self._starts[-1]) if rows is None else np.asarray(rows, dtype=np.int64)
        self._row_bytes = int(np.prod(self.image_shape))

    @classmethod
    def write(cls, batches: Iterable[np.ndarray], path: Path) -> "ImageStore":
        """Write uint8 image batches, in order, to ``path`` (replaced if present)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        count, shape = 0, None
        with open(path, "wb") as stream:
            for batch in batches:
                batch = np.ascontiguousarray(batch, dtype=np.uint8)
                if shape is None:
                    shape = batch.shape[1:]
                elif batch.shape[1:] != shape:
                    raise ValueError(f"image shape changed from {shape} to {batch.shape[1:]}")
                stream.write(batch.tobytes())
                count += len(batch)
        return cls([path], [count], shape or (0,))

    @classmethod
    def in_temporary_dir(cls, batches: Iterable[np.ndarray]) -> "ImageStore":
        """`write` into a fresh temporary directory removed when the store is garbage-collected."""
        directory = Path(tempfile.mkdtemp(prefix="vtabkit-images-"))
        store = cls.write(batches, directory / "images.u8")
        weakref.finalize(store, shutil.rmtree, directory, ignore_errors=True)
        return store

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.image_shape)

    def subset(self, rows: np.ndarray) -> "ImageStore":
        """The store of ``rows`` of this one (no copy)."""
        return self._with_rows(self.rows[np.asarray(rows, dtype=np.int64)])

    def _with_rows(self, rows: np.ndarray) -> "ImageStore":
        store = ImageStore(self.files, self.counts, self.image_shape, rows)
        store._keep = self  # the files live as long as any store reading them
        return store

    def __getitem__(self, index) -> np.ndarray:
        wanted = self.rows[np.asarray(index, dtype=np.int64)]
        out = np.empty((len(wanted), *self.image_shape), np.uint8)
        flat = out.reshape(len(wanted), -1)
        order = np.argsort(wanted, kind="stable")  # read in file order; rows may repeat
        file_numbers = np.searchsorted(self._starts, wanted, side="right") - 1
        handles = {}
        try:
            for position in order:
                number = int(file_numbers[position])
                if number not in handles:
                    handles[number] = os.open(self.files[number], os.O_RDONLY)
                offset = (int(wanted[position]) - int(self._starts[number])) * self._row_bytes
                flat[position] = np.frombuffer(os.pread(handles[number], self._row_bytes, offset), np.uint8)
        finally:
            for handle in handles.values():
                os.close(handle)
        return out


def check_space(directory: Path | None, count: int | None, image_shape: tuple[int, ...]) -> None:
    """One line before any image is decoded when ``directory`` (default: the temporary folder)
    cannot hold ``count`` images: better than a full disk half-way through a fine-tuning run."""
    if not count:
        return
    where = Path(directory) if directory is not None else Path(tempfile.gettempdir())
    existing = next((p for p in [where, *where.parents] if p.exists()), Path("/"))
    needed, free = count * int(np.prod(image_shape)), shutil.disk_usage(existing).free
    if needed > free:
        raise UserError(f"fine-tuning keeps its {count} decoded images on disk ({needed / 1e9:.1f} GB) in "
                        f"{where}, which has {free / 1e9:.1f} GB free; free space there, or choose another "
                        "--out (or TMPDIR)")


def concatenate(stores: list[ImageStore]) -> ImageStore:
    """One store reading the rows of ``stores`` one after the other (no copy)."""
    files, counts, rows, base, keep = [], [], [], 0, []
    for store in stores:
        if store.image_shape != stores[0].image_shape:
            raise ValueError(f"cannot concatenate images of shapes {stores[0].image_shape} and {store.image_shape}")
        files += store.files
        counts += store.counts
        rows.append(store.rows + base)
        base += int(sum(store.counts))
        keep.append(store)
    joined = ImageStore(files, counts, stores[0].image_shape, np.concatenate(rows))
    joined._keep = keep
    return joined
