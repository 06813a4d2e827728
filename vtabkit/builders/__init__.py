"""vtabkit's own TFDS builders: the datasets of the offline ``lite`` suites.

Importing this package registers ``vtabkit_digits``, ``vtabkit_dsprites``, ``vtabkit_count`` and
``vtabkit_scenes`` (multi-label), and for ``lite_robust`` ``vtabkit_digits_shift`` (shifted test
digits) and ``vtabkit_siscore`` (an SI-Score-like factor sweep), with TFDS, so
``tfds.builder(name, data_dir=...)`` finds them. None of them downloads anything: digits come
with scikit-learn, the others are rendered in numpy from a fixed seed.
"""

from vtabkit.builders import count, digits, digits_shift, dsprites, scenes, siscore  # noqa: F401  (class definition registers them)

OWN_DATASETS = ("vtabkit_digits", "vtabkit_dsprites", "vtabkit_count", "vtabkit_scenes")
ROBUSTNESS_DATASETS = ("vtabkit_digits_shift", "vtabkit_siscore/size", "vtabkit_siscore/rotation",
                       "vtabkit_siscore/location")

__all__ = ["OWN_DATASETS", "ROBUSTNESS_DATASETS", "count", "digits", "digits_shift", "dsprites", "scenes", "siscore"]
