"""vtabkit's own TFDS builders: the datasets of the offline ``lite`` suite.

Importing this package registers ``vtabkit_digits``, ``vtabkit_dsprites`` and ``vtabkit_count``
with TFDS, so ``tfds.builder(name, data_dir=...)`` finds them. None of them downloads anything:
digits come with scikit-learn, the other two are rendered in numpy from a fixed seed.
"""

from vtabkit.builders import count, digits, dsprites  # noqa: F401  (class definition registers them)

OWN_DATASETS = ("vtabkit_digits", "vtabkit_dsprites", "vtabkit_count")

__all__ = ["OWN_DATASETS", "count", "digits", "dsprites"]
