"""vtabkit's own TFDS builders: the datasets of the offline ``lite`` suite.

Importing this package registers ``vtabkit_digits``, ``vtabkit_dsprites``, ``vtabkit_count`` and
``vtabkit_scenes`` (multi-label)
with TFDS, so ``tfds.builder(name, data_dir=...)`` finds them. None of them downloads anything:
digits come with scikit-learn, the others are rendered in numpy from a fixed seed.
"""

from vtabkit.builders import count, digits, dsprites, scenes  # noqa: F401  (class definition registers them)

OWN_DATASETS = ("vtabkit_digits", "vtabkit_dsprites", "vtabkit_count", "vtabkit_scenes")

__all__ = ["OWN_DATASETS", "count", "digits", "dsprites", "scenes"]
