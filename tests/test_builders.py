"""vtabkit's own TFDS builders: offline prepare, real digits, faithful dSprites, countable scenes."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")
ndimage = pytest.importorskip("scipy.ndimage")

import vtabkit.builders  # noqa: E402  (registers the builders)
from vtabkit.builders import count, dsprites  # noqa: E402

tf.config.set_visible_devices([], "GPU")


def _prepare(name: str, data_dir) -> "tfds.core.DatasetBuilder":
    builder = tfds.builder(name, data_dir=str(data_dir))
    builder.download_and_prepare()
    return builder


def _examples(builder, split: str) -> list[dict]:
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    return list(tfds.as_numpy(dataset))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Each builder prepared once into a fresh data dir, with both splits read into memory."""
    data_dir = tmp_path_factory.mktemp("tfds")
    result = {}
    for name in vtabkit.builders.OWN_DATASETS:
        builder = _prepare(name, data_dir)
        result[name] = (builder, {split: _examples(builder, split) for split in ("train", "test")})
    return result


def test_builders_are_registered_under_their_names():
    assert vtabkit.builders.OWN_DATASETS == ("vtabkit_digits", "vtabkit_dsprites", "vtabkit_count", "vtabkit_scenes")
    for name in vtabkit.builders.OWN_DATASETS:
        builder_cls = tfds.builder_cls(name)
        assert issubclass(builder_cls, tfds.core.GeneratorBasedBuilder)
        assert str(builder_cls.VERSION) == "1.0.0" and "1.0.0" in builder_cls.RELEASE_NOTES


@pytest.mark.parametrize("name, sizes", [("vtabkit_digits", (1000, 797)),
                                         ("vtabkit_dsprites", (1000, 1000)),
                                         ("vtabkit_count", (1000, 1000))])
def test_split_sizes(prepared, name, sizes):
    builder, examples = prepared[name]
    assert (builder.info.splits["train"].num_examples, builder.info.splits["test"].num_examples) == sizes
    assert (len(examples["train"]), len(examples["test"])) == sizes
    assert str(builder.info.version) == "1.0.0"


@pytest.mark.parametrize("name", ["vtabkit_digits", "vtabkit_dsprites", "vtabkit_count"])
def test_prepare_is_deterministic(prepared, name, tmp_path):
    _, first = prepared[name]
    second = _prepare(name, tmp_path)
    for split in ("train", "test"):
        again = _examples(second, split)
        assert len(again) == len(first[split])
        for one, other in zip(first[split], again):
            assert one.keys() == other.keys()
            for key in one:
                np.testing.assert_array_equal(one[key], other[key], err_msg=f"{split} {key}")


# --- digits -----------------------------------------------------------------------------------

def test_digits_are_sklearns_images_and_labels(prepared):
    from sklearn.datasets import load_digits

    digits = load_digits()
    builder, examples = prepared["vtabkit_digits"]
    assert builder.info.features["label"].num_classes == 10
    seen = []
    for split in ("train", "test"):
        for example in examples[split]:
            index = int(example["index"])
            expected = np.round(digits.images[index] * 255 / 16).astype(np.uint8)[:, :, None]
            assert example["image"].dtype == np.uint8 and example["image"].shape == (8, 8, 1)
            np.testing.assert_array_equal(example["image"], expected)
            assert example["label"] == digits.target[index]
            seen.append(index)
    assert sorted(seen) == list(range(1797))  # every image once, train and test disjoint
    # The permutation mixes classes: the 800-example training slice holds all ten, none rare.
    train_labels = [example["label"] for example in examples["train"][:800]]
    assert np.bincount(train_labels, minlength=10).min() >= 50
    assert seen[:20] != sorted(seen[:20])  # not sklearn's order


def test_digits_load_through_tfds_load(prepared):
    builder, examples = prepared["vtabkit_digits"]
    dataset = tfds.load("vtabkit_digits", split="test[:5]", data_dir=builder.data_dir.rsplit("/vtabkit_digits", 1)[0],
                        download=False, as_supervised=True)
    labels = [int(label) for _, label in tfds.as_numpy(dataset)]
    assert labels == [int(example["label"]) for example in examples["test"][:5]]


# --- dSprites ---------------------------------------------------------------------------------

def test_dsprites_features_match_the_official_builder(tmp_path):
    official = tfds.builder_cls("dsprites")(data_dir=str(tmp_path), version="2.0.0").info.features
    ours = tfds.builder_cls("vtabkit_dsprites")(data_dir=str(tmp_path)).info.features
    assert set(ours.keys()) == set(official.keys())
    for key in official.keys():
        assert type(ours[key]) is type(official[key]), key
        assert ours[key].shape == official[key].shape and ours[key].dtype == official[key].dtype, key
        if isinstance(official[key], tfds.features.ClassLabel):
            assert ours[key].num_classes == official[key].num_classes, key


def test_dsprites_images_are_the_rendering_of_their_factors(prepared):
    _, examples = prepared["vtabkit_dsprites"]
    for example in examples["train"] + examples["test"]:
        image = example["image"]
        assert image.shape == (64, 64, 1) and image.dtype == np.uint8
        assert set(np.unique(image)) == {0, 1}  # binary, and the shape is visible
        expected = dsprites.render(int(example["label_shape"]), dsprites.SCALES[example["label_scale"]],
                                   dsprites.ORIENTATIONS[example["label_orientation"]],
                                   dsprites.POSITIONS[example["label_x_position"]],
                                   dsprites.POSITIONS[example["label_y_position"]])
        np.testing.assert_array_equal(image[:, :, 0], expected)
        # Values are the factor grids at the labels, as in the official dataset.
        assert example["value_shape"] == example["label_shape"] + 1
        np.testing.assert_allclose(example["value_scale"], 0.5 + 0.1 * example["label_scale"], atol=1e-6)
        np.testing.assert_allclose(example["value_orientation"], example["label_orientation"] * 2 * np.pi / 40,
                                   atol=1e-6)
        np.testing.assert_allclose(example["value_x_position"], example["label_x_position"] / 31, atol=1e-6)
        np.testing.assert_allclose(example["value_y_position"], example["label_y_position"] / 31, atol=1e-6)


def test_dsprites_factors_cover_their_ranges(prepared):
    _, examples = prepared["vtabkit_dsprites"]
    every = examples["train"] + examples["test"]
    for key, size in [("label_shape", 3), ("label_scale", 6), ("label_orientation", 40),
                      ("label_x_position", 32), ("label_y_position", 32)]:
        counts = np.bincount([int(example[key]) for example in every], minlength=size)
        assert len(counts) == size and counts.min() > 0, key  # i.i.d. uniform: all values occur
    train_factors = {tuple(int(e[k]) for k in e if k.startswith("label_")) for e in examples["train"]}
    assert len(train_factors) > 990  # sampled, not one repeated combination


def _centroid(image: np.ndarray) -> tuple[float, float]:
    rows, columns = np.nonzero(image)
    return columns.mean(), rows.mean()


@pytest.mark.parametrize("shape", [0, 1, 2])
@pytest.mark.parametrize("scale", [0.5, 1.0])
@pytest.mark.parametrize("orientation", [0.0, 0.7, 2.0])
def test_dsprites_position_moves_the_shape_monotonically(shape, scale, orientation):
    xs = [_centroid(dsprites.render(shape, scale, orientation, x, 0.3))[0] for x in dsprites.POSITIONS]
    ys = [_centroid(dsprites.render(shape, scale, orientation, 0.6, y))[1] for y in dsprites.POSITIONS]
    assert np.all(np.diff(xs) > 0) and np.all(np.diff(ys) > 0)
    assert xs[-1] - xs[0] == pytest.approx(34, abs=1.5)  # centres span 15..49 px


def test_dsprites_centre_mapping_and_margin():
    for x, y in [(0.0, 0.0), (0.25, 0.75), (1.0, 1.0)]:
        # Square and ellipse are centrally symmetric: their centroid is the centre itself.
        for shape in (0, 1):
            column, row = _centroid(dsprites.render(shape, 1.0, 0.3, x, y))
            assert column + 0.5 == pytest.approx(15 + 34 * x, abs=0.3)
            assert row + 0.5 == pytest.approx(15 + 34 * y, abs=0.3)
    # At the largest scale and the extreme positions, no shape touches the border or gets cut.
    for shape in (0, 1, 2):
        for orientation in dsprites.ORIENTATIONS:
            area = dsprites.render(shape, 1.0, orientation, 0.5, 0.5).sum()
            for x in (0.0, 1.0):
                for y in (0.0, 1.0):
                    image = dsprites.render(shape, 1.0, orientation, x, y)
                    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
                    assert border.sum() == 0 and abs(int(image.sum()) - int(area)) <= 8


def test_dsprites_scale_grows_the_shape():
    for shape in (0, 1, 2):
        for orientation in dsprites.ORIENTATIONS[::4]:
            for x in dsprites.POSITIONS[::5]:
                areas = [dsprites.render(shape, scale, orientation, x, 0.5).sum() for scale in dsprites.SCALES]
                assert np.all(np.diff(areas) > 0), (shape, orientation, x)  # every scale step shows
                assert areas[-1] / areas[0] == pytest.approx(4, rel=0.2)  # area ∝ scale²


def test_dsprites_orientation_rotates_the_shape():
    # The heart has no rotational symmetry: all 40 orientations give different images.
    hearts = {dsprites.render(2, 1.0, angle, 0.5, 0.5).tobytes() for angle in dsprites.ORIENTATIONS}
    assert len(hearts) == 40
    # The ellipse's long axis (from second moments) follows the orientation, counter-clockwise.
    for angle in dsprites.ORIENTATIONS[::3]:
        rows, columns = np.nonzero(dsprites.render(1, 1.0, angle, 0.5, 0.5))
        dx, dy = columns - columns.mean(), -(rows - rows.mean())  # y up
        axis = 0.5 * np.arctan2(2 * np.mean(dx * dy), np.mean(dx * dx) - np.mean(dy * dy))
        difference = (axis - angle + np.pi / 2) % np.pi - np.pi / 2  # the axis is defined mod π
        assert abs(difference) < np.radians(6), (angle, axis)
    # Upright heart: the notch is at the top, the point at the bottom.
    heart = dsprites.render(2, 1.0, 0.0, 0.5, 0.5)
    filled_rows = np.nonzero(heart.any(axis=1))[0]
    assert heart[filled_rows[0]].sum() > heart[filled_rows[-1]].sum()


# --- count ------------------------------------------------------------------------------------

def _objects_in(image: np.ndarray) -> np.ndarray:
    """Pixels whose colour is saturated: the background is grey by construction, objects are not."""
    chroma = image.max(axis=-1).astype(int) - image.min(axis=-1).astype(int)
    return chroma > (count.BACKGROUND_MAX_CHROMA + count.OBJECT_MIN_CHROMA) // 2


def test_count_images_hold_exactly_num_objects_objects(prepared):
    builder, examples = prepared["vtabkit_count"]
    assert builder.info.features["label"].num_classes == 6
    for example in examples["train"] + examples["test"]:
        assert example["image"].shape == (64, 64, 3) and example["image"].dtype == np.uint8
        assert 1 <= example["num_objects"] <= 6
        assert example["label"] == example["num_objects"] - 1
        _, components = ndimage.label(_objects_in(example["image"]))
        assert components == example["num_objects"]


def test_count_counts_are_balanced_and_shuffled(prepared):
    _, examples = prepared["vtabkit_count"]
    for split in ("train", "test"):
        counts = np.bincount([int(e["num_objects"]) for e in examples[split]], minlength=7)[1:]
        assert counts.min() >= 166 and counts.max() <= 167
        first = [int(e["num_objects"]) for e in examples[split][:12]]
        assert first != sorted(first) and first != [1, 2, 3, 4, 5, 6] * 2  # not in a pattern
    train800 = np.bincount([int(e["label"]) for e in examples["train"][:800]], minlength=6)
    assert train800.min() >= 100  # the 1k regime's slices stay roughly balanced


def test_count_is_not_given_away_by_object_area(prepared):
    # Objects vary in size, so colourful area overlaps between counts: counting needs objects.
    _, examples = prepared["vtabkit_count"]
    areas = {n: [] for n in range(1, 7)}
    for example in examples["train"]:
        areas[int(example["num_objects"])].append(_objects_in(example["image"]).sum())
    assert max(areas[2]) > min(areas[4]) and max(areas[3]) > min(areas[5])
    # And the background is textured, not flat: brightness varies within and across images.
    backgrounds = [example["image"][~_objects_in(example["image"])].astype(float) for example in examples["train"][:50]]
    assert min(np.std(background) for background in backgrounds) > 3
    assert np.std([np.mean(background) for background in backgrounds]) > 10


def test_count_renderer_mask_matches_the_requested_objects():
    rng = np.random.default_rng(0)
    for num_objects in [1, 2, 3, 4, 5, 6] * 5:
        image, mask = count.render_scene(rng, num_objects)
        assert set(np.unique(mask)) == set(range(num_objects + 1))
        # Each object is one connected piece and none touch (8-connectivity merges touching ones).
        _, components = ndimage.label(mask > 0, structure=np.ones((3, 3)))
        assert components == num_objects
        np.testing.assert_array_equal(_objects_in(image), mask > 0)
