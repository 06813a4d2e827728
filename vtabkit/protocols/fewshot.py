"""Few-shot linear evaluation: closed-form ridge regression on k examples per class.

The protocol of the ViT / BiT / big_vision few-shot evaluator:

1. For seed ``s``, ``np.random.default_rng(s)`` permutes the indices of each class (sorted
   label order) once; the k-shot set is the first k of every class, so for one seed the 1-shot
   set is inside the 5-shot set, and so on. A class with fewer than k examples gives what it has.
2. Features are standardised per dimension with the mean and std (+1e-5) of the few-shot set;
   the test split gets the same transform.
3. A constant bias column of 100 is appended (large, so the bias is nearly unregularised).
4. Targets are one-hot mapped to {-1, +1}; the weights are (XᵀX + λI)⁻¹XᵀY, or the dual
   Xᵀ(XXᵀ + λI)⁻¹Y when there are no more examples than feature dims, from ONE
   eigendecomposition, so further λ values need no further solve (only their own products).
5. The prediction is the argmax over classes; top-1 is measured on the whole test split.

λ is fixed (``l2``, default 2¹⁰ = 1024, as big_vision) unless ``l2_selection`` asks for a choice
from ``L2_GRID`` (2⁻¹⁰ … 2¹⁹) on held-out *training* data — the test split is never read for
it:

- ``val``: the task's val split (whole), scored by the ridge fitted on the few-shot set. The val
  examples only judge λ; they are never added to the few-shot training set.
- ``loo``: exact leave-one-out over the few-shot set (closed form from the same
  eigendecomposition; the standardisation statistics come from the whole few-shot set). Needs at
  least 2 shots per class. On balanced sets it under-rates very large λ: there the model is
  mostly its bias, and leaving an example out makes its own class the rarest.

Ties between λ values go to the largest λ (the most regularised model).

Multi-hot targets: drawing k examples "per class" has no meaning when an example has several
classes, so the few-shot set is instead the first ``shots x num_classes`` examples of train in
TFDS record order (the same size as a k-shot set, and the ``first:N`` regime's rule); targets
are the multi-hot rows mapped to {-1, +1}, scores are the ridge outputs (mAP ranks them), and
``val`` selection judges λ by val mAP (``loo`` is single-label only). The details record
``sampling: first_n`` and that the seed did not change the set.

Linear algebra runs under jax.numpy on the default device in the default float type (float32
unless jax_enable_x64), with full-precision matrix products so results do not depend on TF32 /
bf16 matmul defaults of the accelerator. Solves are padded to shape buckets (``common.bucket``:
rows masked out of the statistics and targets, zero feature columns, masked classes) so that the
many few-shot set sizes of a suite share a few compiles; ``SHAPE_BUCKETS = False`` solves at the
exact shape (tests compare the two). At or below ``host_max_size`` (few-shot examples x width x
classes) NumPy solves the same problem on the host in float64 instead, with no compile
(``details.solver``: ``host`` or ``device``).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vtabkit import metrics, regimes
from vtabkit.errors import UserError
from vtabkit.protocols import merge_config
from vtabkit.protocols.common import (Number, bucket, check_setting, check_splits, headline, one_blas_thread,
                                      solver_for, target_kind)

DESCRIPTION = ("few-shot linear: closed-form ridge regression on 1/5/10/25 examples per class, "
               "3 seeds (ViT/BiT/big_vision)")
INPUT = "features"
TARGETS = ("single", "multi")  # multi: first-N sampling instead of per class (module doc)

BIAS = 100.0  # value of the appended bias column
STD_EPS = 1e-5  # added to the per-dimension std before dividing
L2_GRID: tuple[float, ...] = tuple(2.0 ** p for p in range(-10, 20))  # 2^-10 ... 2^19, 30 values
L2_SELECTIONS = ("fixed", "val", "loo")

_NAME = "fewshot"
_HIGHEST = jax.lax.Precision.HIGHEST

# Shape buckets. Rows and width share one ladder (the width floor a power-of-two multiple of
# the row floor), so a dual problem (n <= d) stays dual-shaped after padding (N <= D).
SHAPE_BUCKETS = True
ROW_FLOOR, WIDTH_FLOOR, CLASS_FLOOR = 32, 64, 16
QUERY_FLOOR, QUERY_CHUNK = 256, 2048  # query rows: bucketed up to a chunk, then chunked

Split = tuple[np.ndarray, np.ndarray]


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------

def _float_dtype() -> np.dtype:
    # float32 unless the user enabled jax_enable_x64.
    return jax.dtypes.canonicalize_dtype(np.float64)


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------

def sample_few_shot(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Indices of the ``shots``-per-class training set for ``seed``.

    ``np.random.default_rng(seed)`` permutes each class's indices (classes in sorted label
    order) once, and the first ``shots`` of each permutation are taken — so the sets for one
    seed are nested across shot counts. A class with fewer examples gives all it has. The
    result is grouped by class (sorted), in permutation order within a class.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise UserError(f"labels must be 1-D; got shape {labels.shape}")
    if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
        raise UserError(f"shots must be a positive integer; got {shots!r}")
    return regimes.draw_per_class(labels, int(shots), seed)


# ---------------------------------------------------------------------------------------------
# Ridge regression through one eigendecomposition
# ---------------------------------------------------------------------------------------------

class Ridge(NamedTuple):
    """The few-shot ridge problem after its one eigendecomposition.

    X is the (n, d + 1) design matrix (standardised features, bias column). For any λ the
    weights are ``basis @ (coef / (eigvals + λ)[:, None])``:
    primal (n > d):  XᵀX = V diag(s) Vᵀ, basis = V, coef = VᵀXᵀY;
    dual   (n ≤ d):  XXᵀ = U diag(s) Uᵀ, basis = XᵀU, coef = UᵀY.
    ``train_factor`` (XV, or U) and ``targets`` (Y) serve the leave-one-out shortcut.
    """

    mean: jax.Array  # (d,) few-shot feature mean
    scale: jax.Array  # (d,) few-shot feature std + STD_EPS
    basis: jax.Array  # (d + 1, r)
    eigvals: jax.Array  # (r,), clipped at 0
    coef: jax.Array  # (r, c)
    train_factor: jax.Array  # (n, r)
    targets: jax.Array  # (n, c) in {-1, +1}; 0 on padded rows and classes
    row_mask: jax.Array  # (n,) 1 for the real few-shot rows, 0 for padding
    class_mask: jax.Array  # (c,) True for the real classes


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
    # Full float32 products: accelerators otherwise default to TF32/bf16 passes, which would
    # make results depend on the hardware.
    return jnp.matmul(a, b, precision=_HIGHEST)


def _design(x: jax.Array, mean: jax.Array, scale: jax.Array, xp: Any = jnp) -> jax.Array:
    # ``xp``: jax.numpy on device, numpy on the host path.
    z = (x - mean) / scale
    return xp.concatenate([z, xp.full((x.shape[0], 1), BIAS, z.dtype)], axis=1)


def _is_dual(ridge: Ridge) -> bool:
    # Shapes are static under jit: the dual keeps one eigenvalue per example (n < d + 1).
    return ridge.eigvals.shape[0] < ridge.basis.shape[0]


def _complement_of(unit: jax.Array) -> jax.Array:
    """(n, n-1) orthonormal columns orthogonal to the unit vector ``unit`` (unit[0] > 0).

    They are the last n-1 columns of the Householder reflection that maps e_1 to -unit
    (v = unit + e_1 never vanishes, so no case needs special handling).
    """
    n = unit.shape[0]
    v = unit.at[0].add(1.0)
    reflection = jnp.eye(n, dtype=unit.dtype) - 2.0 * jnp.outer(v, v) / jnp.dot(v, v)
    return reflection[:, 1:]


@partial(jax.jit, static_argnames=("num_classes", "dual"))
def _fit(x: jax.Array, y: jax.Array, row_mask: jax.Array, class_mask: jax.Array, num_classes: int,
         dual: bool) -> Ridge:
    """The ridge problem of the rows where ``row_mask`` is 1 (the real rows come first).

    Padded rows get a zero design row (bias included) and zero targets, so they add nothing to
    XᵀX, XᵀY or XXᵀ (they only add zero eigenvalues, whose coefficients are 0); padded feature
    columns are 0, so they standardise to 0; padded classes get zero targets and are masked out
    of every argmax. ``dual`` is decided on the real shape (n <= d), as without padding.
    """
    count = row_mask.sum()
    mean = (row_mask[:, None] * x).sum(0) / count
    scale = jnp.sqrt((row_mask[:, None] * (x - mean) ** 2).sum(0) / count) + STD_EPS
    design = _design(x, mean, scale) * row_mask[:, None]
    z = design[:, :-1]
    # ``y`` is int labels, or (N, C) multi-hot rows (its rank is static under jit).
    hot = y.astype(x.dtype) if y.ndim == 2 else jax.nn.one_hot(y, num_classes, dtype=x.dtype)
    targets = (2.0 * hot - 1.0) * row_mask[:, None] * class_mask
    # The standardised features are mean-zero over the few-shot set, so the bias column is
    # orthogonal to them: XᵀX = diag(ZᵀZ, n·100²) and the row mask (the all-ones vector of the
    # real rows) is an eigenvector of XXᵀ with eigenvalue n·100². Only the feature block is
    # decomposed; leaving the huge bias eigenvalue out of eigh keeps float32 accurate for small
    # λ (it would otherwise set the round-off scale of every eigenpair).
    bias_eigval = jnp.full((1,), count * BIAS ** 2, x.dtype)
    if dual:  # decompose the (N-1) x (N-1) Gram matrix on the complement of the real-row vector
        unit = row_mask / jnp.sqrt(count)
        complement = _complement_of(unit)
        reduced = _mm(complement.T, z)
        eigvals, w = jnp.linalg.eigh(_mm(reduced, reduced.T))
        u = jnp.concatenate([_mm(complement, w), unit[:, None]], axis=1)
        basis, coef, factor = _mm(design.T, u), _mm(u.T, targets), u
    else:
        eigvals, v_z = jnp.linalg.eigh(_mm(z.T, z))
        v = jax.scipy.linalg.block_diag(v_z, jnp.ones((1, 1), x.dtype))
        factor = _mm(design, v)
        basis, coef = v, _mm(factor.T, targets)
    # A Gram matrix is PSD; round-off can push tiny eigenvalues below 0, which would make
    # 1 / (s + λ) explode for small λ.
    eigvals = jnp.concatenate([jnp.maximum(eigvals, 0.0), bias_eigval])
    return Ridge(mean, scale, basis, eigvals, coef, factor, targets, row_mask, class_mask)


def _argmax(ridge: Ridge, logits: jax.Array) -> jax.Array:
    return jnp.argmax(jnp.where(ridge.class_mask, logits, -jnp.inf), axis=1)


def _shrunk_coef(ridge: Ridge, l2: jax.Array) -> jax.Array:
    return ridge.coef / (ridge.eigvals + l2)[:, None]


def _logits_fn(ridge: Ridge, design: jax.Array, grid: int, mm=_mm):
    """A function λ → logits (m, c) of ``design`` rows, by the cheaper of two exact routes for
    these shapes and ``grid`` λ values: form the (p, c) weights per λ and multiply, or project
    onto the eigenbasis once and apply only the shrunk coefficients per λ (wins for long λ grids
    with many classes). ``mm``: the matrix product (``np.matmul`` on the host path)."""
    (m, p), r, c = design.shape, ridge.eigvals.shape[0], ridge.coef.shape[1]
    if grid * (p * r * c + m * p * c) <= m * p * r + grid * m * r * c:
        return lambda l2: mm(design, mm(ridge.basis, _shrunk_coef(ridge, l2)))
    projected = mm(design, ridge.basis)
    return lambda l2: mm(projected, _shrunk_coef(ridge, l2))


@jax.jit
def _predict_grid(ridge: Ridge, x: jax.Array, l2s: jax.Array) -> jax.Array:
    """Predicted classes of raw features ``x`` for each λ, (len(l2s), m).

    λ values run one after another (lax.map) so memory holds one (m, c) logit block at a time.
    """
    logits = _logits_fn(ridge, _design(x, ridge.mean, ridge.scale), l2s.shape[0])
    return jax.lax.map(lambda l2: _argmax(ridge, logits(l2)), l2s)


@jax.jit
def _scores(ridge: Ridge, x: jax.Array, l2: jax.Array) -> jax.Array:
    """The ridge outputs (m, c) of raw features ``x`` at one λ."""
    return _logits_fn(ridge, _design(x, ridge.mean, ridge.scale), 1)(l2)


@jax.jit
def _correct_grid(ridge: Ridge, x: jax.Array, y: jax.Array, l2s: jax.Array) -> jax.Array:
    """Number of correct predictions per λ, (len(l2s),)."""
    return jnp.sum(_predict_grid(ridge, x, l2s) == y[None, :], axis=1)


@jax.jit
def _loo_correct_grid(ridge: Ridge, y: jax.Array, l2s: jax.Array) -> jax.Array:
    """Exact leave-one-out correct counts per λ over the few-shot set.

    With hat matrix H(λ), the prediction for example i from a fit without i is
    y_i − (y_i − ŷ_i) / (1 − h_ii). In the dual, U is orthogonal, so both the residual
    U diag(λ/(s+λ)) UᵀY and 1 − h_ii = Σ_j U_ij² λ/(s_j+λ) are formed without cancellation.
    """
    factor, targets, eigvals = ridge.train_factor, ridge.targets, ridge.eigvals
    tiny = jnp.finfo(targets.dtype).tiny

    def correct(l2: jax.Array) -> jax.Array:
        if _is_dual(ridge):
            keep = l2 / (eigvals + l2)
            residual = _mm(factor, keep[:, None] * ridge.coef)
            one_minus_h = _mm(factor ** 2, keep)
        else:
            residual = targets - _mm(factor, _shrunk_coef(ridge, l2))
            one_minus_h = 1.0 - _mm(factor ** 2, 1.0 / (eigvals + l2))
        loo = targets - residual / jnp.maximum(one_minus_h, tiny)[:, None]
        return jnp.sum((_argmax(ridge, loo) == y) & (ridge.row_mask > 0))

    return jax.lax.map(correct, l2s)


# ---------------------------------------------------------------------------------------------
# The same ridge on the host (NumPy, float64), for problems too small to pay for a compile
# ---------------------------------------------------------------------------------------------
# Below ``host_max_size`` (few-shot examples x width x classes) compiling ``_fit`` and its
# scoring functions costs more than the whole solve. The host path runs the same steps at the
# exact shape (no padding, so no masks): standardisation, bias column, ±1 targets, the one
# eigendecomposition with the bias eigenvalue set apart, the dual when n <= d, the same λ grid,
# leave-one-out formula and argmax (ties to the lower class index). It works in float64, so it
# is at least as exact as the device's float32; scores come back in the device's float type.

def _on_host(ridge: Ridge) -> bool:
    # A host ridge holds NumPy arrays; jax Arrays are not np.ndarray.
    return isinstance(ridge.eigvals, np.ndarray)


@one_blas_thread
def _fit_host(x: np.ndarray, y: np.ndarray, num_classes: int) -> Ridge:
    """``_fit`` of all rows of ``(x, y)`` in NumPy float64."""
    x = np.asarray(x, np.float64)
    (n, d), y = x.shape, np.asarray(y)
    mean = x.mean(0)
    scale = np.sqrt(((x - mean) ** 2).mean(0)) + STD_EPS
    design = _design(x, mean, scale, np)
    z = design[:, :-1]
    hot = y.astype(np.float64) if y.ndim == 2 else np.eye(num_classes)[y]
    targets = 2.0 * hot - 1.0
    if n <= d:  # dual, on the complement of the all-ones vector (see ``_fit``)
        unit = np.full(n, 1.0 / np.sqrt(n))
        v = unit.copy()
        v[0] += 1.0
        complement = (np.eye(n) - 2.0 * np.outer(v, v) / (v @ v))[:, 1:]
        reduced = complement.T @ z
        eigvals, w = np.linalg.eigh(reduced @ reduced.T)
        u = np.c_[complement @ w, unit]
        basis, coef, factor = design.T @ u, u.T @ targets, u
    else:
        eigvals, v_z = np.linalg.eigh(z.T @ z)
        basis = np.zeros((d + 1, d + 1))
        basis[:d, :d], basis[d, d] = v_z, 1.0
        factor = design @ basis
        coef = factor.T @ targets
    eigvals = np.r_[np.maximum(eigvals, 0.0), n * BIAS ** 2]
    return Ridge(mean, scale, basis, eigvals, coef, factor, targets, np.ones(n), np.ones(num_classes, bool))


class Direct(NamedTuple):
    """The host path's ridge at ONE λ (``l2_selection: fixed``): its weights by a Cholesky solve,
    several times cheaper than the eigendecomposition a λ grid needs, and the same solution."""

    mean: np.ndarray  # (d,)
    scale: np.ndarray  # (d,)
    weights: np.ndarray  # (d + 1, c), bias row last


@one_blas_thread
def _solve_host(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float) -> Direct:
    """(XᵀX + λI)⁻¹XᵀY, or Xᵀ(XXᵀ + λI)⁻¹Y when n <= d, in float64 (X, Y as in ``_fit``)."""
    from scipy.linalg import cho_factor, cho_solve

    x, y = np.asarray(x, np.float64), np.asarray(y)
    mean = x.mean(0)
    scale = np.sqrt(((x - mean) ** 2).mean(0)) + STD_EPS
    design = _design(x, mean, scale, np)
    targets = 2.0 * (y.astype(np.float64) if y.ndim == 2 else np.eye(num_classes)[y]) - 1.0
    n, p = design.shape
    if n > p - 1:
        gram = design.T @ design + l2 * np.eye(p)
        weights = cho_solve(cho_factor(gram), design.T @ targets)
    else:
        gram = design @ design.T + l2 * np.eye(n)
        weights = design.T @ cho_solve(cho_factor(gram), targets)
    return Direct(mean, scale, weights)


@one_blas_thread
def _direct_scores(direct: Direct, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    blocks = [_design(x[i:i + QUERY_CHUNK], direct.mean, direct.scale, np) @ direct.weights
              for i in range(0, max(len(x), 1), QUERY_CHUNK)]
    return np.concatenate(blocks)


def _host_logits(ridge: Ridge, x: np.ndarray, l2s: Sequence[float]):
    """Per block of QUERY_CHUNK query rows, a function λ → logits (float64) of those rows."""
    x = np.asarray(x, np.float64)
    for start in range(0, max(len(x), 1), QUERY_CHUNK):
        design = _design(x[start:start + QUERY_CHUNK], ridge.mean, ridge.scale, np)
        yield _logits_fn(ridge, design, len(l2s), np.matmul)


@one_blas_thread
def _host_predict_grid(ridge: Ridge, x: np.ndarray, l2s: Sequence[float]) -> np.ndarray:
    """``_predict_grid`` on the host: predicted classes (len(l2s), m)."""
    blocks = [np.stack([np.argmax(logits(l2), axis=1) for l2 in l2s]) for logits in _host_logits(ridge, x, l2s)]
    return np.concatenate(blocks, axis=1)


@one_blas_thread
def _host_scores(ridge: Ridge, x: np.ndarray, l2: float) -> np.ndarray:
    """``_scores`` on the host, in the device's float type."""
    return np.concatenate([logits(l2) for logits in _host_logits(ridge, x, [l2])]).astype(_float_dtype())


@one_blas_thread
def _host_loo_correct_grid(ridge: Ridge, y: np.ndarray, l2s: Sequence[float]) -> np.ndarray:
    """``_loo_correct_grid`` on the host (same formulas; see there)."""
    factor, targets, eigvals = ridge.train_factor, ridge.targets, ridge.eigvals
    counts = []
    for l2 in l2s:
        if _is_dual(ridge):
            keep = l2 / (eigvals + l2)
            residual = factor @ (keep[:, None] * ridge.coef)
            one_minus_h = (factor ** 2) @ keep
        else:
            residual = targets - factor @ _shrunk_coef(ridge, l2)
            one_minus_h = 1.0 - (factor ** 2) @ (1.0 / (eigvals + l2))
        loo = targets - residual / np.maximum(one_minus_h, np.finfo(np.float64).tiny)[:, None]
        counts.append(int(np.sum(np.argmax(loo, axis=1) == y)))
    return np.asarray(counts)


def _padded(array: np.ndarray, shape: tuple[int, ...], fill: Any = 0) -> np.ndarray:
    out = np.full(shape, fill, array.dtype)
    out[tuple(slice(0, n) for n in array.shape)] = array
    return out


def fit_ridge(x: np.ndarray, y: np.ndarray, num_classes: int, buckets: bool | None = None,
              solver: str = "device") -> Ridge:
    """The eigendecomposed ridge problem of training set ``(x, y)`` (no sampling, no checks):
    on the device, padded to its shape bucket unless ``buckets`` (default ``SHAPE_BUCKETS``) is
    False, or with ``solver="host"`` in NumPy at its exact shape."""
    if solver == "host":
        return _fit_host(x, y, int(num_classes))
    buckets = SHAPE_BUCKETS if buckets is None else buckets
    dtype = _float_dtype()
    (n, d), c = np.shape(x), int(num_classes)
    shape = (bucket(n, ROW_FLOOR), bucket(d, WIDTH_FLOOR), bucket(c, CLASS_FLOOR)) if buckets else (n, d, c)
    rows, width, classes = shape
    # _is_dual (shapes only) needs a dual problem to stay dual-shaped: the ladders make N <= D.
    assert n > d or rows <= width, (n, d, rows, width)
    x_pad = _padded(np.asarray(x, dtype), (rows, width))
    y = np.asarray(y, np.int32)
    y_pad = _padded(y, (rows, classes) if y.ndim == 2 else (rows,))
    return _fit(jnp.asarray(x_pad), jnp.asarray(y_pad), jnp.asarray(np.arange(rows) < n, dtype),
                jnp.asarray(np.arange(classes) < c), classes, n <= d)


def _real_classes(ridge: Ridge) -> int:
    return int(np.asarray(ridge.class_mask).sum())  # the real classes come first


def _query_blocks(ridge: Ridge, x: np.ndarray, fill: np.ndarray | None = None):
    """Blocks of query rows (and ``fill``'s rows, padded with -1) at the ridge's width, each
    padded to a bucketed row count (chunks of QUERY_CHUNK beyond it), with its real row count.
    Without buckets (the ridge's width is the features' own), one exact-shape block."""
    dtype = _float_dtype()
    width = ridge.mean.shape[0]
    x = np.asarray(x, dtype)
    if width == x.shape[1] and not SHAPE_BUCKETS:
        yield jnp.asarray(x), None if fill is None else jnp.asarray(fill, jnp.int32), len(x)
        return
    block = min(bucket(len(x), QUERY_FLOOR), QUERY_CHUNK)
    if len(x) == 0:  # no queries: one empty block keeps the shapes of the outputs
        yield jnp.zeros((block, width), dtype), None if fill is None else jnp.full(block, -1, jnp.int32), 0
    for start in range(0, len(x), block):
        part = x[start:start + block]
        padded_y = None if fill is None else jnp.asarray(
            _padded(np.asarray(fill[start:start + block], np.int32), (block,), -1))
        yield jnp.asarray(_padded(part, (block, width))), padded_y, len(part)


def ridge_predict(train_x: np.ndarray, train_y: np.ndarray, query_x: np.ndarray,
                  num_classes: int, l2s: Sequence[float], solver: str = "device") -> np.ndarray:
    """Predicted classes of ``query_x`` for each λ in ``l2s``, shape ``(len(l2s), m)``.

    The full protocol classifier (standardise, bias column, ±1 targets, ridge, argmax) fitted on
    all of ``(train_x, train_y)`` with one eigendecomposition for every λ, on ``solver``
    (``device`` or ``host``).
    """
    if solver == "host" and len(l2s) == 1:
        return np.argmax(_direct_scores(_solve_host(train_x, train_y, int(num_classes), float(l2s[0])), query_x),
                         axis=1)[None, :len(query_x)]
    ridge = fit_ridge(train_x, train_y, num_classes, solver=solver)
    if _on_host(ridge):
        return _host_predict_grid(ridge, query_x, [float(l2) for l2 in l2s])[:, :len(query_x)]
    l2s = jnp.asarray(l2s, _float_dtype())
    blocks = [(_predict_grid(ridge, x, l2s), n) for x, _, n in _query_blocks(ridge, query_x)]
    return np.concatenate([np.asarray(p)[:, :n] for p, n in blocks], axis=1)


def ridge_top1(ridge: Ridge, split: Split, l2s: Sequence[float]) -> np.ndarray:
    """Top-1 of the fitted ``ridge`` on ``split = (x, y)`` for each λ in ``l2s`` (float64)."""
    x, y = split
    if _on_host(ridge):
        predicted = _host_predict_grid(ridge, x, [float(l2) for l2 in l2s])[:, :len(y)]
        return (predicted == np.asarray(y)[None, :]).sum(1).astype(np.float64) / len(y)
    l2s = jnp.asarray(l2s, _float_dtype())
    # Padded query rows carry label -1, which no prediction equals.
    counts = [_correct_grid(ridge, block, labels, l2s) for block, labels, _ in _query_blocks(ridge, x, y)]
    correct = np.sum([np.asarray(c, dtype=np.int64) for c in counts], axis=0)
    return correct.astype(np.float64) / len(y)  # divide on host, in float64


# ---------------------------------------------------------------------------------------------
# Settings and cells
# ---------------------------------------------------------------------------------------------

def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _check_int_or_list(key: str, value: Any, minimum: int) -> None:
    # shots and seeds may be one integer (a cell) or a list of them (the whole grid).
    values = _as_list(value)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum
                         for v in values):
        raise UserError(f"protocol {_NAME!r}: setting {key!r} is {value!r}; expected an integer "
                        f">= {minimum} or a non-empty list of them")


def check_config(config: dict[str, Any]) -> None:
    _check_int_or_list("shots", config["shots"], 1)
    _check_int_or_list("seed" if "seed" in config else "seeds",
                       config["seed"] if "seed" in config else config["seeds"], 0)
    check_setting(_NAME, config, "l2", Number, lambda v: v > 0, "a positive number")
    check_setting(_NAME, config, "host_max_size", Number, lambda v: v >= 0, "a number >= 0 (0: never)")
    check_setting(_NAME, config, "l2_selection", str, lambda v: v in L2_SELECTIONS,
                  "one of " + ", ".join(L2_SELECTIONS))
    if config["l2_selection"] == "loo" and min(_as_list(config["shots"])) < 2:
        raise UserError(f"protocol {_NAME!r}: l2_selection 'loo' needs at least 2 shots per "
                        "class; drop 1 from 'shots' or use l2_selection 'fixed' or 'val'")


def cells(config: dict[str, Any]) -> list[dict[str, Any]]:
    """One cell per (shots, seed), shots-major: setting ``f"{shots}shot"`` and ``seed``.

    A config with a scalar ``seed`` gives cells for that seed only (``seeds`` is ignored).
    """
    seeds = [config["seed"]] if "seed" in config else _as_list(config["seeds"])
    base = {key: value for key, value in config.items() if key not in ("seeds", "seed", "setting")}
    return [{**base, "shots": shots, "seed": seed, "setting": f"{shots}shot"}
            for shots in _as_list(config["shots"]) for seed in seeds]


def _is_single_cell(config: dict[str, Any]) -> bool:
    return "seed" in config and not isinstance(config["shots"], (list, tuple)) \
        and not isinstance(config["seed"], (list, tuple))


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------

def _choose_l2(ridge: Ridge | Direct, few_shot_y: np.ndarray, val: Split | None,
               cell: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """λ for this cell and what to record about how it was chosen. Never sees test data."""
    selection = cell["l2_selection"]
    if selection == "fixed":
        return float(cell["l2"]), {}
    multi = np.ndim(few_shot_y) == 2
    if selection == "val":
        if val is None:
            raise UserError("fewshot l2_selection 'val' needs a val split and this task has none; "
                            "use l2_selection 'loo' or 'fixed'")
        if multi:
            return _choose_l2_by_map(ridge, val)
        scores = ridge_top1(ridge, val, L2_GRID)
    elif multi:
        raise UserError("fewshot l2_selection 'loo' counts correct argmaxes, which needs single-label "
                        "targets; use l2_selection 'val' or 'fixed' for multi-hot labels")
    elif _on_host(ridge):
        scores = _host_loo_correct_grid(ridge, np.asarray(few_shot_y), L2_GRID).astype(np.float64) / len(few_shot_y)
    else:
        labels = _padded(np.asarray(few_shot_y, np.int32), ridge.row_mask.shape, -1)
        correct = _loo_correct_grid(ridge, jnp.asarray(labels), jnp.asarray(L2_GRID, _float_dtype()))
        scores = np.asarray(correct, dtype=np.float64) / len(few_shot_y)
    # Largest λ among the best: the most regularised of equally good models.
    best = len(scores) - 1 - int(np.argmax(scores[::-1]))
    return L2_GRID[best], {"l2_grid": list(L2_GRID), "l2_holdout_top1": scores.tolist()}


def _choose_l2_by_map(ridge: Ridge, val: Split) -> tuple[float, dict[str, Any]]:
    """λ with the best val mAP (ties to the largest λ), for multi-hot targets."""
    average_precision = metrics.get_metric("map").function
    scores = np.array([average_precision(predict(FewShotHead(ridge, l2), val[0]), val[1]) for l2 in L2_GRID])
    best = len(scores) - 1 - int(np.argmax(scores[::-1]))
    return L2_GRID[best], {"l2_grid": list(L2_GRID), "l2_holdout_map": scores.tolist()}


@dataclasses.dataclass
class FewShotHead:
    """The eigendecomposed ridge problem of one few-shot set and the λ chosen for it (on the host
    path with a fixed λ: the weights at that λ)."""

    ridge: Ridge | Direct
    l2: float


def predict(head: FewShotHead, x: np.ndarray) -> np.ndarray:
    """Ridge outputs (N, C) of features ``x`` (the argmax is the predicted class)."""
    if isinstance(head.ridge, Direct):
        return _direct_scores(head.ridge, x).astype(_float_dtype())
    if _on_host(head.ridge):
        return _host_scores(head.ridge, x, head.l2)
    l2 = jnp.asarray(head.l2, _float_dtype())
    blocks = [(_scores(head.ridge, block, l2), n) for block, _, n in _query_blocks(head.ridge, x)]
    return np.concatenate([np.asarray(s)[:n] for s, n in blocks])[:, :_real_classes(head.ridge)]


def _solver(few_x: np.ndarray, num_classes: int, config: dict[str, Any]) -> str:
    # Few-shot examples x width x classes, as the linear probe's threshold.
    return solver_for(few_x.shape[0] * few_x.shape[1] * num_classes, config["host_max_size"])


def _fit_for(few_x: np.ndarray, few_y: np.ndarray, num_classes: int, solver: str,
             config: dict[str, Any]) -> Ridge | Direct:
    # A fixed λ on the host needs no eigendecomposition (nothing else is tried).
    if solver == "host" and config["l2_selection"] == "fixed":
        return _solve_host(few_x, few_y, num_classes, float(config["l2"]))
    return fit_ridge(few_x, few_y, num_classes, solver=solver)


def fit(train: Split, val: Split | None, *, num_classes: int, target: str, config: dict[str, Any],
        context: Any = None) -> tuple[FewShotHead, dict[str, Any]]:
    """Draw the cell's few-shot set from ``train``, fit the ridge, settle λ (never on test).

    The details record the shots each class really had (a class with fewer than ``shots``
    examples gives what it has): ``shots_per_class_min`` / ``_max``.
    """
    shots, seed = int(config["shots"]), int(config["seed"])
    if target == "multi":
        return _fit_multi(train, val, num_classes, shots, seed, config)
    index = sample_few_shot(train[1], shots, seed)
    few_x, few_y = train[0][index], train[1][index]
    solver = _solver(few_x, num_classes, config)
    ridge = _fit_for(few_x, few_y, num_classes, solver, config)
    l2, selection_record = _choose_l2(ridge, few_y, val, config)
    per_class = np.bincount(few_y, minlength=num_classes)
    present = per_class[np.bincount(train[1], minlength=num_classes) > 0]
    details = {"setting": f"{shots}shot", "shots": shots, "seed": seed, "l2": l2,
               "l2_selection": config["l2_selection"], "num_train": int(len(index)),
               "shots_per_class_min": int(present.min()), "shots_per_class_max": int(present.max()),
               "classes_in_train": int(len(present)), "solver": solver, **selection_record}
    return FewShotHead(ridge, l2), details


def _fit_multi(train: Split, val: Split | None, num_classes: int, shots: int, seed: int,
               config: dict[str, Any]) -> tuple[FewShotHead, dict[str, Any]]:
    """Multi-hot targets: the first ``shots x num_classes`` train rows (TFDS order) as the set."""
    size = min(shots * num_classes, len(train[1]))
    few_x, few_y = train[0][:size], train[1][:size]
    solver = _solver(few_x, num_classes, config)
    ridge = _fit_for(few_x, few_y, num_classes, solver, config)
    l2, selection_record = _choose_l2(ridge, few_y, val, config)
    positives = few_y.sum(0)
    details = {"setting": f"{shots}shot", "shots": shots, "seed": seed, "l2": l2,
               "l2_selection": config["l2_selection"], "num_train": int(size),
               "sampling": "first_n", "first_n": int(size), "seed_changes_set": False,
               "sampling_note": (f"multi-hot targets: the first {size} train examples "
                                 f"({shots} x {num_classes} classes) instead of {shots} per class"),
               "positives_per_class_min": int(positives.min()),
               "positives_per_class_max": int(positives.max()), "solver": solver, **selection_record}
    return FewShotHead(ridge, l2), details


def _evaluate_cell(train: Split, val: Split | None, test: Split, num_classes: int,
                   cell: dict[str, Any]) -> dict[str, Any]:
    head, details = fit(train, val, num_classes=num_classes, target=target_kind(train[1]), config=cell)
    return {**headline(predict(head, test[0]), test[1]), **details, "num_test": int(len(test[1]))}


def _summarise(results: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    per_setting: dict[str, dict[str, Any]] = {}
    name = "top1" if "top1" in results[0] else "map"  # map for multi-hot targets
    for shots in dict.fromkeys(r["shots"] for r in results):  # first-seen order
        values = [r[name] for r in results if r["shots"] == shots]
        per_setting[f"{shots}shot"] = {"shots": shots, f"{name}_mean": float(np.mean(values)),
                                       f"{name}_std": float(np.std(values)), "num_seeds": len(values)}
    headline = max(r["shots"] for r in results)
    head = [r for r in results if r["shots"] == headline]
    return {name: per_setting[f"{headline}shot"][f"{name}_mean"], "setting": f"{headline}shot",
            "shots": headline, "seeds": [r["seed"] for r in head],
            "l2": float(config["l2"]) if config["l2_selection"] == "fixed" else None,
            "l2_selection": config["l2_selection"], "num_train": head[0]["num_train"],
            "num_test": head[0]["num_test"], "per_setting": per_setting, "per_cell": results}


def evaluate_features(train: Split, val: Split | None, test: Split, num_classes: int,
                      config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Few-shot top-1 of frozen features; ``config`` keys override ``protocols/fewshot.yaml``.

    The return shape follows the config:

    - **one cell** (scalar ``shots`` and a ``seed`` key, as produced by :func:`cells`):
      ``{"top1", "setting", "shots", "seed", "l2", "l2_selection", "num_train", "num_test"}``,
      plus ``l2_grid`` and ``l2_holdout_top1`` (held-out top-1 per λ) when λ was selected.
    - **several cells** (``config`` None, or list-valued ``shots``, or no ``seed``): every
      (shots, seed) cell is evaluated and the result is
      ``{"top1", "setting", "shots", "seeds", "l2", "l2_selection", "num_train", "num_test",
      "per_setting", "per_cell"}`` where ``per_cell`` lists the one-cell dicts above,
      ``per_setting[f"{k}shot"]`` holds ``top1_mean``, ``top1_std`` (population std over seeds)
      and ``num_seeds``, and the headline ``top1`` is the mean over seeds at the LARGEST shot
      count (named by ``setting``/``shots``). ``l2`` is the fixed λ, or None when λ is
      selected per cell (see ``per_cell``).

    ``val`` is used only when ``l2_selection`` is ``val`` (to judge λ, never as training data).
    """
    config = merge_config(_NAME, config)  # validates the settings before any work
    cell_list = cells(config)
    train, val, test, num_classes = check_splits(train, val, test, num_classes)
    results = [_evaluate_cell(train, val, test, num_classes, cell) for cell in cell_list]
    return results[0] if _is_single_cell(config) else _summarise(results, config)
