"""Particle measurements checked against shapes whose sizes are known by hand."""

from __future__ import annotations

import math
import threading

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from napari_temseg.engine.measure import (
    Cancelled,
    feret_diameters,
    label_particles,
    measure,
    measure_objects,
    measure_stack,
    split_touching,
    summarize,
    write_csv,
)


def ellipse(
    shape: tuple[int, int],
    center_nm: tuple[float, float],
    a_nm: float,
    b_nm: float,
    pixel_nm: tuple[float, float],
    angle_deg: float = 0.0,
) -> np.ndarray:
    """Pixels whose centres lie in an ellipse (semi-axes a along x, b along y, rotated)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    y = yy * pixel_nm[0] - center_nm[0]
    x = xx * pixel_nm[1] - center_nm[1]
    t = math.radians(angle_deg)
    u = x * math.cos(t) + y * math.sin(t)
    v = -x * math.sin(t) + y * math.cos(t)
    return (u / a_nm) ** 2 + (v / b_nm) ** 2 <= 1.0


def semantic(*particles: np.ndarray, cls: int = 2) -> np.ndarray:
    """Support everywhere (class 1), ``cls`` where any particle is."""
    mask = np.ones(particles[0].shape, dtype=np.uint8)
    for p in particles:
        mask[p] = cls
    return mask


PX = (0.2, 0.2)
ONE_PX = 0.2 * 1.001  # "within one pixel", with room for rounding


def test_disc_area_diameter_and_centroid_with_translate():
    r = 6.0  # nm, 30 px at 0.2 nm/px
    disc = ellipse((120, 140), (10.0, 14.0), r, r, PX)
    table = measure_objects(semantic(disc), scale=PX, translate=(100.0, -50.0))
    assert len(table) == 1
    row = table.iloc[0]
    assert row["area_nm2"] == pytest.approx(math.pi * r**2, rel=0.02)
    assert row["equivalent_diameter_nm"] == pytest.approx(2 * r, rel=0.01)
    assert row["feret_max_nm"] == pytest.approx(2 * r, abs=ONE_PX)  # within one pixel
    assert row["feret_min_nm"] == pytest.approx(2 * r, abs=ONE_PX)
    assert row["aspect_ratio"] == pytest.approx(1.0, abs=0.03)
    assert row["centroid_y_nm"] == pytest.approx(100.0 + 10.0, abs=0.01)
    assert row["centroid_x_nm"] == pytest.approx(-50.0 + 14.0, abs=0.01)
    assert row["class"] == 2 and not row["touches_border"]
    assert (row["bbox_y0_px"], row["bbox_x0_px"]) == (20, 40)  # (10 - 6) / 0.2, (14 - 6) / 0.2


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0])
def test_ellipse_ferets_and_aspect_ratio(angle):
    a, b = 10.0, 5.0  # semi-axes in nm: 50 x 25 px
    shape = ellipse((150, 150), (15.0, 15.0), a, b, PX, angle)
    row = measure_objects(shape, scale=PX).iloc[0]
    assert row["area_nm2"] == pytest.approx(math.pi * a * b, rel=0.02)
    assert row["feret_max_nm"] == pytest.approx(2 * a, abs=ONE_PX)
    assert row["feret_min_nm"] == pytest.approx(2 * b, abs=ONE_PX)
    assert row["aspect_ratio"] == pytest.approx(a / b, rel=0.03)


def test_non_square_pixels():
    pixel = (0.1, 0.2)  # y, x: a round particle is twice as many rows as columns
    a, b = 8.0, 4.0
    shape = ellipse((300, 160), (15.0, 16.0), a, b, pixel)
    rows, cols = np.nonzero(shape)
    assert np.ptp(rows) > 0.9 * np.ptp(cols)  # not a disc in pixels, an ellipse in nm
    row = measure_objects(shape.astype(np.uint8) * 3, scale=pixel, translate=(1.0, 2.0)).iloc[0]
    assert row["area_nm2"] == pytest.approx(math.pi * a * b, rel=0.02)
    assert row["equivalent_diameter_nm"] == pytest.approx(2 * math.sqrt(a * b), rel=0.01)
    assert row["feret_max_nm"] == pytest.approx(2 * a, abs=ONE_PX)
    assert row["feret_min_nm"] == pytest.approx(2 * b, abs=ONE_PX)
    assert row["centroid_y_nm"] == pytest.approx(1.0 + 15.0, abs=0.01)
    assert row["centroid_x_nm"] == pytest.approx(2.0 + 16.0, abs=0.01)
    # the same particle along y instead: Feret max now along the fine axis
    tall = ellipse((300, 160), (15.0, 16.0), a, b, pixel, 90.0)
    row = measure_objects(tall, scale=pixel).iloc[0]
    assert row["feret_max_nm"] == pytest.approx(2 * a, abs=ONE_PX)
    assert row["feret_min_nm"] == pytest.approx(2 * b, abs=ONE_PX)


def test_feret_of_a_single_pixel_and_a_bar():
    assert feret_diameters(np.ones((1, 1), bool)) == pytest.approx((1.0, math.sqrt(0.5)))
    fmax, fmin = feret_diameters(np.ones((3, 40), bool), (0.5, 0.25))
    assert fmax == pytest.approx(math.hypot(40 * 0.25, 2 * 0.5))
    assert fmin == pytest.approx(3 * 0.5)


def test_touching_discs_split_by_watershed_into_right_areas():
    r = 4.0
    left = ellipse((100, 160), (10.0, 10.0), r, r, PX)
    right = ellipse((100, 160), (10.0, 17.6), r, r, PX)  # centres 7.6 nm apart: touching
    assert (left & right).sum() > 0  # they really overlap a little
    mask = semantic(left, right)
    merged = measure_objects(mask, scale=PX)
    assert len(merged) == 1
    table = measure_objects(mask, scale=PX, split=True, split_min_distance_nm=2.0)
    assert len(table) == 2
    expected = [left.sum() * 0.04, right.sum() * 0.04]
    got = table.sort_values("centroid_x_nm")["area_nm2"].to_numpy()
    assert got == pytest.approx(expected, rel=0.05)
    assert got.sum() == pytest.approx((left | right).sum() * 0.04)
    assert table["centroid_x_nm"].min() == pytest.approx(10.0, abs=0.3)
    assert table["centroid_x_nm"].max() == pytest.approx(17.6, abs=0.3)
    # the automatic distance (median inscribed radius) splits them as well
    assert len(measure_objects(mask, scale=PX, split=True)) == 2
    # a minimum distance larger than the centre spacing keeps them together
    assert len(measure_objects(mask, scale=PX, split=True, split_min_distance_nm=9.0)) == 1


def test_split_does_not_cut_a_lone_ellipse_or_lose_a_small_particle():
    big = ellipse((120, 200), (12.0, 15.0), 8.0, 4.0, PX)
    tiny = ellipse((120, 200), (12.0, 30.0), 0.3, 0.3, PX)
    labels = split_touching(big | tiny, None, PX)
    assert labels.max() == 2
    assert set(np.unique(labels[big])) == {1}


def test_split_with_non_square_pixels_uses_nm_distances():
    pixel = (0.1, 0.2)
    left = ellipse((200, 100), (10.0, 6.0), 4.0, 4.0, pixel)
    right = ellipse((200, 100), (10.0, 13.6), 4.0, 4.0, pixel)
    labels = split_touching(left | right, 2.0, pixel)
    assert labels.max() == 2
    areas = np.bincount(labels.ravel())[1:] * 0.02
    assert areas == pytest.approx([left.sum() * 0.02, right.sum() * 0.02], rel=0.05)


def test_default_particle_classes_skip_support_and_keep_classes():
    a = ellipse((100, 100), (5.0, 5.0), 2.0, 2.0, PX)
    b = ellipse((100, 100), (14.0, 14.0), 3.0, 3.0, PX)
    mask = np.ones((100, 100), dtype=np.uint8)
    mask[a] = 2
    mask[b] = 3
    mask[:5, :5] = 0  # unlabelled corner is neither particle nor support
    table = measure_objects(mask, scale=PX)
    assert sorted(table["class"].tolist()) == [2, 3]
    only3 = measure_objects(mask, scale=PX, particle_classes=[3])
    assert only3["class"].tolist() == [3]
    assert only3.iloc[0]["area_nm2"] == pytest.approx(b.sum() * 0.04)
    support = measure_objects(mask, scale=PX, particle_classes=[1])
    assert len(support) == 1 and support.iloc[0]["touches_border"]


def test_instance_mask_keeps_ids_and_touching_instances_stay_apart():
    left = ellipse((80, 120), (8.0, 8.0), 4.0, 4.0, PX)
    right = ellipse((80, 120), (8.0, 15.8), 4.0, 4.0, PX)
    inst = np.zeros((80, 120), dtype=np.uint32)
    inst[left] = 4_000_000_000  # ids are the user's, even huge ones
    inst[right & ~left] = 7
    table = measure_objects(inst, scale=PX, instances=True)
    assert sorted(table["label"].tolist()) == [7, 4_000_000_000]
    assert table["class"].isna().all()
    areas = dict(zip(table["label"], table["area_nm2"], strict=True))
    assert areas[7] == pytest.approx((right & ~left).sum() * 0.04)
    # the same touching pair as one instance, split on request
    merged = (inst > 0).astype(np.uint16) * 5
    assert len(measure_objects(merged, scale=PX, instances=True)) == 1
    assert len(measure_objects(merged, scale=PX, instances=True, split=True)) == 2


def test_mean_intensity_from_image():
    disc = ellipse((60, 60), (6.0, 6.0), 3.0, 3.0, PX)
    image = np.where(disc, 40.0, 5.0).astype(np.float32)
    image[30, 30] = 140.0  # one bright pixel inside raises the mean by 100 / n
    table = measure_objects(semantic(disc), image=image, scale=PX)
    assert table.iloc[0]["mean_intensity"] == pytest.approx(40.0 + 100.0 / disc.sum())
    image[30, 31] = np.nan  # a dead pixel: the mean of the others, not NaN
    table = measure_objects(semantic(disc), image=image, scale=PX)
    assert table.iloc[0]["mean_intensity"] == pytest.approx(40.0 + 100.0 / (disc.sum() - 1))
    with pytest.raises(ValueError, match="must match"):
        measure_objects(semantic(disc), image=image[:-1], scale=PX)


def test_border_exclusion_and_min_area():
    inside = ellipse((100, 100), (10.0, 10.0), 3.0, 3.0, PX)
    cut = ellipse((100, 100), (1.0, 10.0), 3.0, 3.0, PX)  # runs off the top edge
    speck = ellipse((100, 100), (16.0, 16.0), 0.4, 0.4, PX)
    mask = semantic(inside, cut, speck)
    table = measure_objects(mask, scale=PX, min_size_px=0)  # the speck is 13 px
    assert len(table) == 3 and table["touches_border"].sum() == 1
    kept = measure_objects(mask, scale=PX, exclude_border=True, min_size_px=0)
    assert len(kept) == 2 and not kept["touches_border"].any()
    big = measure_objects(mask, scale=PX, exclude_border=True, min_area_nm2=5.0, min_size_px=0)
    assert len(big) == 1
    assert big.iloc[0]["area_nm2"] == pytest.approx(inside.sum() * 0.04)


def test_a_particle_cut_by_an_aligned_frames_zero_border_touches_the_border():
    """Beside pixels with no data (the zero border of a drift-corrected frame, or NaN) a
    particle is cut as at the frame's edge: with the image given, it counts as touching."""
    cut = ellipse((100, 200), (10.0, 19.0), 3.0, 3.0, PX)  # reaches column 80
    inside = ellipse((100, 200), (10.0, 30.0), 3.0, 3.0, PX)
    assert cut[:, 80].any() and not cut[:, :80].any()
    image = np.random.default_rng(0).normal(100, 10, (100, 200)).astype(np.float32)
    image[:, :80] = 0  # the border
    mask = semantic(cut, inside)
    table = measure_objects(mask, image=image, scale=PX)
    assert table["touches_border"].tolist() == [True, False]
    assert not measure_objects(mask, scale=PX)["touches_border"].any()  # no image: unknown
    # ... unless the mask shows it: `temseg segment` leaves the border unclassified (0)
    segmented = mask.copy()
    segmented[:, :80] = 0
    assert measure_objects(segmented, scale=PX)["touches_border"].tolist() == [True, False]
    unpainted = np.where(mask == 1, 0, mask)  # 0 all round the particles: no border
    assert not measure_objects(unpainted, scale=PX)["touches_border"].any()
    nan_image = np.where(image == 0, np.nan, image)
    assert measure_objects(mask, image=nan_image, scale=PX)["touches_border"].tolist() == [
        True,
        False,
    ]
    # the strip a shift along one axis leaves, narrower than the 64 px runs both ways
    near_edge = ellipse((100, 200), (10.0, 7.0), 3.0, 3.0, PX)  # reaches column 20
    assert near_edge[:, 20].any() and not near_edge[:, :20].any()
    shifted = np.random.default_rng(1).normal(100, 10, (100, 200)).astype(np.float32)
    shifted[:, :8] = 0  # 12 px short of the particle: it is whole
    lone = semantic(near_edge)
    assert not measure_objects(lone, image=shifted, scale=PX)["touches_border"].any()
    shifted[:, :20] = 0
    assert measure_objects(lone, image=shifted, scale=PX)["touches_border"].tolist() == [True]


def test_a_particle_beside_saturated_vacuum_does_not_touch_the_border():
    """Vacuum that saturates the camera is one value at the edge, like padding, but it is
    specimen: particles beside it are whole, not cut."""
    near = ellipse((300, 400), (42.0, 20.0), 3.0, 3.0, PX)
    yy, xx = np.mgrid[:300, :400]
    hole = (yy - 300) ** 2 + xx**2 < 120**2  # a hole's arc, from the bottom left corner
    assert (ndimage.binary_dilation(near, iterations=4) & hole).any()
    rng = np.random.default_rng(1)
    image = np.minimum(rng.poisson(np.where(hole, 3000.0, 800.0)), 1023).astype(np.uint16)
    table = measure_objects(semantic(near & ~hole), image=image, scale=PX)
    assert table["touches_border"].tolist() == [False]


def test_summary_count_coverage_and_sizes():
    d1 = ellipse((100, 200), (10.0, 10.0), 2.0, 2.0, PX)
    d2 = ellipse((100, 200), (10.0, 25.0), 4.0, 4.0, PX)
    table = measure_objects(semantic(d1, d2), scale=PX)
    field = 100 * 200 * 0.04
    s = summarize(table, field)
    assert s["count"] == 2
    assert s["coverage"] == pytest.approx((d1.sum() + d2.sum()) * 0.04 / field)
    diam = np.sqrt(4 * np.array([d1.sum(), d2.sum()]) * 0.04 / np.pi)
    assert s["mean_equivalent_diameter_nm"] == pytest.approx(diam.mean())
    assert s["median_equivalent_diameter_nm"] == pytest.approx(np.median(diam))
    assert s["std_equivalent_diameter_nm"] == pytest.approx(diam.std(ddof=1))
    assert s["mean_area_nm2"] == pytest.approx((d1.sum() + d2.sum()) * 0.04 / 2)
    empty = summarize(measure_objects(np.ones((10, 10), np.uint8)), 100.0)
    assert empty["count"] == 0 and empty["coverage"] == 0.0
    assert math.isnan(empty["mean_equivalent_diameter_nm"])
    with pytest.raises(ValueError, match="image_area"):
        summarize(table, 0.0)


def test_stack_has_frame_column_and_per_frame_values():
    frames = [semantic(ellipse((80, 80), (8.0, 8.0), 2.0 + t, 2.0 + t, PX)) for t in range(3)]
    frames[1][:] = 1  # an empty frame in the middle
    stack = np.stack(frames)
    table = measure_stack(stack, scale=(1.0, *PX))
    assert "frame" == table.columns[0]
    assert table["frame"].tolist() == [0, 2]
    assert table["equivalent_diameter_nm"].tolist() == pytest.approx([4.0, 8.0], rel=0.02)
    only = measure_stack(stack, scale=PX, frames=[2])
    assert only["frame"].tolist() == [2]
    seen = []
    result = measure(stack, scale=PX, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert result.labels.shape == stack.shape and result.frames == [0, 1, 2]
    assert result.summary["count"] == 2
    assert result.image_area == pytest.approx(3 * 80 * 80 * 0.04)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        measure(stack, scale=PX, cancel=cancel)
    with pytest.raises(ValueError, match="outside"):
        measure_stack(stack, frames=[3])


def test_returned_labels_hold_only_measured_particles():
    inside = ellipse((100, 100), (10.0, 10.0), 3.0, 3.0, PX)
    cut = ellipse((100, 100), (1.0, 10.0), 3.0, 3.0, PX)
    table, labels = measure_objects(
        semantic(inside, cut), scale=PX, exclude_border=True, return_labels=True
    )
    assert np.unique(labels).tolist() == [0, int(table.iloc[0]["label"])]
    assert (labels > 0).sum() == inside.sum()


def test_csv_round_trip_with_units_and_no_overwrite(tmp_path):
    disc = ellipse((60, 60), (6.0, 6.0), 3.0, 3.0, PX)
    table = measure_objects(semantic(disc), image=disc.astype(float), scale=PX)
    first = write_csv(table, tmp_path / "particles.csv")
    assert first == tmp_path / "particles.csv"
    back = pd.read_csv(first)
    assert list(back.columns) == list(table.columns)
    assert "area_nm2" in back.columns and "feret_max_nm" in back.columns
    for name in table.columns:
        if name == "class":
            assert back[name].tolist() == table[name].tolist()
        else:
            assert back[name].to_numpy() == pytest.approx(table[name].to_numpy(), rel=1e-8)
    second = write_csv(table, tmp_path / "particles.csv")
    assert second == tmp_path / "particles_1.csv"
    assert first.read_text() == second.read_text()
    assert write_csv(table, tmp_path / "out" / "t").name == "t.csv"  # folder made, suffix


def test_empty_mask_gives_empty_table_not_error(tmp_path):
    table = measure_objects(np.zeros((50, 50), np.uint8), scale=PX)
    assert len(table) == 0 and "equivalent_diameter_nm" in table.columns
    assert len(measure_objects(np.ones((50, 50), np.uint8), split=True)) == 0
    back = pd.read_csv(write_csv(table, tmp_path / "empty.csv"))
    assert list(back.columns) == list(table.columns) and len(back) == 0


def test_bad_masks_give_clear_errors():
    with pytest.raises(ValueError, match=r"integer label image.*float32"):
        measure_objects(np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError, match="2D"):
        measure_objects(np.zeros((2, 10, 10), np.uint8))
    with pytest.raises(ValueError, match="negative"):
        measure_objects(-np.ones((10, 10), np.int16))
    with pytest.raises(ValueError, match="scale"):
        measure_objects(np.zeros((10, 10), np.uint8), scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="3D"):
        measure_stack(np.zeros((10, 10), np.uint8))


def test_boolean_mask_is_one_particle_class():
    disc = ellipse((60, 60), (6.0, 6.0), 3.0, 3.0, PX)
    labels, classes = label_particles(disc, PX)
    assert labels.max() == 1 and classes == {1: 1}


def test_units_follow_the_unit_argument():
    disc = ellipse((40, 40), (10.0, 10.0), 5.0, 5.0, (1.0, 1.0))  # 81 px
    table = measure_objects(disc, unit="px")
    assert "area_px2" in table.columns and "area_nm2" not in table.columns
    assert summarize(table, 1600.0)["count"] == 1


def test_dask_stack_is_measured_frame_by_frame():
    da = pytest.importorskip("dask.array")
    frame = semantic(ellipse((60, 60), (6.0, 6.0), 3.0, 3.0, PX))
    lazy = da.from_array(np.stack([frame] * 4), chunks=(1, 60, 60))
    result = measure(lazy, scale=PX, return_labels=False)
    assert result.table["frame"].tolist() == [0, 1, 2, 3] and result.labels is None
    assert result.table["area_nm2"].to_numpy() == pytest.approx((frame == 2).sum() * 0.04)


def test_specks_are_cleaned_before_measuring_by_default():
    """A network's mask: one particle with a pinhole, and 1-3 px specks around it."""
    from napari_temseg.engine.measure import MIN_SIZE_PX, clean_specks

    disc = ellipse((80, 80), (8.0, 8.0), 3.0, 3.0, PX)  # radius 15 px, about 700 px
    mask = semantic(disc)
    mask[40, 40] = 1  # a pinhole inside the particle
    for y, x, n in [(5, 60, 1), (70, 10, 2), (60, 70, 3), (75, 40, 1)]:
        mask[y, x : x + n] = 2  # specks of the particle class on the support
    mask[0, 0:2] = 2  # a speck on the border
    raw = measure_objects(mask, scale=PX, min_size_px=0)
    assert len(raw) == 6  # what the dock used to report
    table = measure_objects(mask, scale=PX)
    assert len(table) == 1
    assert table.iloc[0]["area_nm2"] == pytest.approx(disc.sum() * 0.04)  # pinhole filled
    cleaned = clean_specks(mask)
    assert cleaned[40, 40] == 2 and cleaned[5, 60] == 1 and cleaned[0, 0] == 1
    assert (cleaned == 2).sum() == disc.sum() and mask[40, 40] == 1  # input unchanged
    assert clean_specks(mask, min_size_px=0) is not mask  # a copy, the input is kept
    # what is kept is at least MIN_SIZE_PX pixels; a particle of exactly that size stays
    small = np.ones((20, 60), np.uint8)
    small[5, 5 : 5 + MIN_SIZE_PX] = 2
    assert (small == 2).sum() == MIN_SIZE_PX and len(measure_objects(small)) == 1


def test_pinholes_at_the_edge_and_other_classes_stay():
    mask = np.ones((40, 40), np.uint8)
    mask[0:25, 0:25] = 2
    mask[0, 3] = 1  # a notch at the image edge is not a hole
    mask[2, 20] = 3  # a one-pixel class-3 speck inside the class-2 particle
    mask[8:16, 8:16] = 3  # a 64-px class-3 particle inside it: not a hole of class 2
    from napari_temseg.engine.measure import clean_specks

    cleaned = clean_specks(mask)
    assert cleaned[0, 3] == 1 and (cleaned[8:16, 8:16] == 3).all()
    assert cleaned[2, 20] == 2  # the speck became support, then a filled pinhole
    assert sorted(measure_objects(mask)["class"].tolist()) == [2, 3]


def test_small_instances_are_left_out_by_default():
    inst = np.zeros((30, 30), np.int32)
    inst[2:10, 2:10] = 7  # 64 px
    inst[20, 20] = 9
    assert measure_objects(inst, instances=True)["label"].tolist() == [7]
    assert measure_objects(inst, instances=True, min_size_px=0)["label"].tolist() == [7, 9]
    boolean = np.zeros((30, 30), bool)
    boolean[2:10, 2:10] = True
    boolean[20, 20] = True
    assert len(measure_objects(boolean)) == 1


def test_instance_masks_are_measured_as_instances(tmp_path, capsys):
    """An instance mask was measured as classes: id 1 dropped as support, each id a class;
    ours also counted the support's instance as a particle (coverage 100 %)."""
    import tifffile

    from napari_temseg.cli import main

    inst = _instance_export(tmp_path)
    assert main(["measure", str(inst), "-o", str(tmp_path / "t.csv"), "--min-size", "0"]) == 0
    table = pd.read_csv(tmp_path / "t.csv")
    assert sorted(table["class"]) == [2, 2, 3]  # the support's id left out, classes kept
    assert sorted(table["area_nm2"]) == [25.0, 25.0, 37.5]
    # an instance mask from another tool (ids 1..4, 0 between them): --instances
    other = np.zeros((80, 100), np.uint16)
    for i, (y, x) in enumerate([(5, 5), (30, 30), (50, 70), (65, 10)], start=1):
        other[y : y + 8, x : x + 8] = i
    tifffile.imwrite(tmp_path / "stardist.tif", other)
    argv = ["measure", str(tmp_path / "stardist.tif"), "-o", str(tmp_path / "s.csv")]
    assert main([*argv, "--instances"]) == 0
    assert len(pd.read_csv(tmp_path / "s.csv")) == 4
    # not strokes: fine-tuning on it is refused in one line
    np.save(tmp_path / "img.npy", np.random.default_rng(0).normal(size=(80, 100)))
    code = main(["finetune", "--image", str(tmp_path / "img.npy"), "--labels", str(inst),
                 "-o", str(tmp_path / "seg.safetensors"), "--steps", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "is an instance mask (one id per particle), not strokes" in err
    assert not (tmp_path / "seg.safetensors").exists()


def _instance_export(folder) -> str:
    """The Export dock's instance mask of support (1) with two class-2 and one class-3
    particle, 0.5 nm pixels."""
    from napari_temseg.io.export import export_labels

    semantic = np.ones((80, 100), np.uint8)
    semantic[10:20, 10:20] = 2
    semantic[40:50, 60:75] = 2
    semantic[60:70, 20:30] = 3
    written = export_labels(semantic, folder, "m", scale=(0.5, 0.5), instance=True)
    return next(p for p in written.masks if "_instances" in p)
