"""Data regimes as data: which task split trains, which validates, and which subset of train.

A regime is written as a short string, the same everywhere (suite YAML, ``--regime``, records,
reports):

- ``1k``: train800 / val200 (VTAB-1k);
- ``full``: train / val (the whole training data);
- ``first:N``: the first N examples of ``train`` in TFDS record order (not class-balanced, as in
  the remote-sensing low-data experiments), val as declared (``val``);
- ``per_class:K``: K examples of every class drawn from ``train`` with the cell's seed (a class
  with fewer gives what it has), val as declared;
- ``per_class:K+V``: as ``per_class:K``, and V more examples of every class, drawn from the same
  seeded permutation (so never among the K), are the val split: a held-out val set taken from
  ``train`` for tasks without one (ImageNet: 50 + 10 per class).

The eval sets (``test`` and any others a task declares) never depend on the regime.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vtabkit.errors import UserError

# name -> (train split, val split); the parameterised kinds draw from the `full` splits.
_NAMED = {"1k": ("train800", "val200"), "full": ("train", "val")}
_SUBSETS = ("first", "per_class")
HELP = ("1k, full, first:N (first N train examples), per_class:K (K per class, seeded) or per_class:K+V "
        "(K per class to train and V more per class from train to validate)")


@dataclasses.dataclass(frozen=True)
class Regime:
    """A parsed regime: ``name`` as written, the task splits it reads, and its train subset."""

    name: str
    train: str
    val: str
    subset: str | None = None  # "first" or "per_class"
    size: int = 0  # N of first:N, K of per_class:K
    val_size: int = 0  # V of per_class:K+V: val drawn from train (0: val as declared)

    def train_indices(self, targets: np.ndarray, seed: int) -> np.ndarray | None:
        """Rows of the train split this regime keeps (None: all of them).

        ``targets`` are the train split's targets in TFDS order; ``per_class`` needs single labels.
        """
        if self.subset is None:
            return None
        if self.subset == "first":
            if self.size > len(targets):
                raise UserError(f"regime {self.name}: the train split has only {len(targets)} examples")
            return np.arange(self.size)
        targets = np.asarray(targets)
        if targets.ndim != 1:
            raise UserError(f"regime {self.name} draws examples per class, which needs single-label "
                            "targets; use first:N for multi-label tasks")
        return np.sort(draw_per_class(targets, self.size, seed))  # back to TFDS order

    def val_indices(self, targets: np.ndarray, seed: int) -> np.ndarray | None:
        """Rows of the train split that validate (``per_class:K+V``), else None (val as declared).

        Per class, the V examples after the K training ones in the same seeded permutation, so
        the two never overlap and the K are the very ones `train_indices` keeps.
        """
        if not self.val_size:
            return None
        targets = np.asarray(targets)
        if targets.ndim != 1:
            raise UserError(f"regime {self.name} draws examples per class, which needs single-label targets")
        both = draw_per_class(targets, self.size + self.val_size, seed)
        train = set(draw_per_class(targets, self.size, seed).tolist())
        return np.sort(np.array([row for row in both.tolist() if row not in train], dtype=np.int64))


def draw_per_class(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` indices of every class (all of a smaller class), grouped by class in sorted
    label order, in the order of ``np.random.default_rng(seed)``'s permutation of each class.

    The same seed gives nested draws for growing ``count`` (the few-shot sets of one seed).
    """
    rng = np.random.default_rng(seed)
    # One stable sort groups each class's indices in ascending order, like np.flatnonzero
    # would per class, without one pass over all labels per class.
    order = np.argsort(labels, kind="stable")
    _, starts = np.unique(labels[order], return_index=True)
    chosen = [rng.permutation(members)[:count] for members in np.split(order, starts[1:])]
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)


def parse(text: str) -> Regime:
    """The `Regime` written as ``text``; a one-line `UserError` for anything else."""
    if not isinstance(text, str):
        raise UserError(f"regime {text!r} must be a string: {HELP}")
    if text in _NAMED:
        return Regime(text, *_NAMED[text])
    kind, colon, number = text.partition(":")
    number, plus, held_out = number.partition("+")
    if plus and kind == "per_class" and number.isdigit() and held_out.isdigit() \
            and int(number) > 0 and int(held_out) > 0:
        return Regime(text, "train", "train", subset=kind, size=int(number), val_size=int(held_out))
    if colon and not plus and kind in _SUBSETS and number.isdigit() and int(number) > 0:
        return Regime(text, *_NAMED["full"], subset=kind, size=int(number))
    raise UserError(f"unknown regime {text!r}; use {HELP}")


def parse_list(text: str) -> list[Regime]:
    """``"first:100,first:1000,full"`` → three regimes (each a separate cell of a run)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UserError(f"no regime in {text!r}; use {HELP}")
    return [parse(name) for name in dict.fromkeys(names)]
