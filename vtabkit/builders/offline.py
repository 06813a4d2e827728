"""What vtabkit's own TFDS builders share: they generate their data and download nothing."""


class OfflineBuilder:
    """Mixin for a `tfds.core.GeneratorBasedBuilder` that generates its examples locally.

    Put it first in the bases so these attributes override TFDS's defaults.
    """

    # Records keep the generation order (already a seeded shuffle), so ``train[:800]`` does not
    # depend on TFDS's key hashing (TFDS then orders records by their integer key).
    disable_shuffling = True
    # Nothing is downloaded, so there are no URL checksums to look up. Saying so also skips
    # TFDS 4.9's lookup of the checksums file, which imports `importlib_resources`, a package
    # TFDS only installs on Python < 3.9 (tensorflow/datasets#11212).
    url_infos = None
