"""The TEM/STEM simulator: noise statistics, masks, reproducibility, distortion switches."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pytest
from scipy import ndimage

from conftest import neighbour_correlation
from napari_temseg.synth import KINDS, DistortionConfig, SynthSample, distort, simulate, specimen
from napari_temseg.synth.distortions import HRTEM_ONLY, STEM_ONLY


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- noise physics


@pytest.mark.parametrize("kind", KINDS)
def test_poisson_mean_and_variance_follow_dose_and_gain(kind):
    # four flat stripes of known ideal value; Poisson + gain only
    levels = np.array([0.1, 0.3, 0.6, 1.0], np.float32)
    ideal = np.repeat(levels, 64)[:, None] * np.ones((1, 256), np.float32)
    for dose in (3.0, 40.0, 900.0):
        noisy, clean, params = distort(ideal, dose, kind, _rng(1), DistortionConfig.poisson_only())
        g = params["gain"]["adu_per_e"]
        assert g > 0 and params["poisson"]["applied"]
        np.testing.assert_allclose(clean, g * dose * ideal, rtol=1e-5)
        for i, lv in enumerate(levels):
            stripe = noisy[64 * i : 64 * (i + 1)].astype(np.float64)
            lam = dose * lv
            n = stripe.size
            # mean within 5 standard errors; variance within 5 x its standard error
            assert abs(stripe.mean() - g * lam) < 5 * g * np.sqrt(lam / n)
            var_se = g**2 * lam * np.sqrt(2 / n + 1 / (lam * n))
            assert abs(stripe.var() - g**2 * lam) < 5 * var_se
            # counts really are integers times the gain
            frac = stripe[:100] / g - np.rint(stripe[:100] / g)
            assert np.abs(frac).max() < 1e-3


def test_snr_grows_like_sqrt_dose():
    ideal = np.full((256, 256), 0.5, np.float32)
    doses = np.array([2.0, 20.0, 200.0, 2000.0])
    snr = []
    for d in doses:
        noisy, _, _ = distort(ideal, d, "stem", _rng(2), DistortionConfig.poisson_only())
        snr.append(noisy.mean() / noisy.std())
    snr = np.array(snr)
    np.testing.assert_allclose(snr, np.sqrt(0.5 * doses), rtol=0.03)
    slope = np.polyfit(np.log(doses), np.log(snr), 1)[0]
    assert slope == pytest.approx(0.5, abs=0.02)


def test_no_distortion_gives_the_clean_image():
    ideal = specimen("stem", 64, 0.05, _rng(3))[0]
    noisy, clean, _ = distort(ideal, 100.0, "stem", _rng(4), DistortionConfig.none())
    np.testing.assert_array_equal(noisy, clean)
    np.testing.assert_allclose(clean, 100.0 * ideal, rtol=1e-6)


# --------------------------------------------------------------------------- masks


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masks_agree_and_instances_are_single_regions(kind, seed):
    s = simulate(kind, 192, pixel_size_nm=0.05, dose=100.0, seed=seed)
    assert isinstance(s, SynthSample)
    np.testing.assert_array_equal(s.semantic == 2, s.instances > 0)
    assert set(np.unique(s.semantic)) <= {1, 2}
    n = int(s.instances.max())
    assert n == s.params["specimen"]["n_particles"]
    assert set(np.unique(s.instances)) == set(range(n + 1)) - (
        {0} if s.semantic.min() == 2 else set()
    )
    for i in range(1, n + 1):
        _, ncomp = ndimage.label(s.instances == i)
        assert ncomp == 1, f"instance {i} is in {ncomp} pieces"


def test_scan_coordinates_reproduce_the_recorded_geometry():
    from napari_temseg.synth.distortions import scan_coordinates

    # geometry only: the recorded frame is the scene sampled where the probe was
    cfg = DistortionConfig.none()
    for name in ("drift", "row_jitter", "fly_back"):
        getattr(cfg, name).enabled = True
        getattr(cfg, name).probability = 1.0
    cfg.drift.total_px = (6.0, 6.0)
    ideal = specimen("stem", 128, 0.05, _rng(3))[0]
    noisy, _, params = distort(ideal, 100.0, "stem", _rng(4), cfg)
    coords = scan_coordinates(ideal.shape, "stem", params["seed"], cfg)
    warped = ndimage.map_coordinates(ideal, coords, order=1, mode="reflect")
    np.testing.assert_allclose(noisy, 100.0 * warped, rtol=1e-5, atol=1e-4)
    assert not np.allclose(noisy, 100.0 * ideal, atol=1e-2)
    assert scan_coordinates(ideal.shape, "hrtem", params["seed"], cfg) is None


@pytest.mark.parametrize("seed", [0, 1])
def test_recorded_masks_follow_the_scan(seed):
    # a drifting scan moves the particles in the recorded image: the recorded mask follows
    cfg = DistortionConfig.none()
    cfg.drift.enabled = True
    cfg.drift.total_px = (8.0, 8.0)
    s = simulate("stem", 256, pixel_size_nm=0.05, dose=100.0, seed=seed, distortions=cfg)
    bright = s.noisy > np.percentile(s.noisy, 100 * (s.recorded_semantic == 1).mean())
    agree_recorded = (bright == (s.recorded_semantic == 2)).mean()
    agree_scene = (bright == (s.semantic == 2)).mean()
    assert agree_recorded > agree_scene + 0.01, (agree_recorded, agree_scene)
    np.testing.assert_array_equal(s.recorded_semantic == 2, s.recorded_instances > 0)
    assert set(np.unique(s.recorded_instances)) <= set(np.unique(s.instances))
    h = simulate("hrtem", 128, pixel_size_nm=0.05, dose=100.0, seed=seed)
    assert h.recorded_semantic is h.semantic and h.recorded_instances is h.instances


@pytest.mark.parametrize("seed", range(6))
def test_stem_particles_brighter_than_support(seed):
    s = simulate("stem", 160, dose=50.0, seed=seed)
    inside = s.semantic == 2
    if inside.any() and (~inside).any():
        assert s.clean[inside].mean() > 1.5 * s.clean[~inside].mean()
        assert s.ideal[inside].mean() > 2 * s.ideal[~inside].mean()


def test_stem_drawn_signal_lies_inside_the_mask():
    # with no support signal, anything bright must come from a masked particle (plus blur)
    ideal, _sem, inst, info = specimen("stem", 256, 0.04, _rng(5), support_level=0.0, coverage=0.3)
    assert inst.max() > 0
    reach = int(np.ceil(3 * info["probe_sigma_px"])) + 2
    far = ~ndimage.binary_dilation(inst > 0, np.ones((3, 3), bool), iterations=reach)
    assert np.all(ideal[far] == 0)
    core = ndimage.binary_erosion(inst > 0, iterations=2)
    assert ideal[core].min() > 0


def test_coverage_and_layout_options():
    covs = []
    for c in (0.05, 0.2, 0.45):
        got = [
            specimen("stem", 256, 0.05, _rng(s), coverage=c, diameter_nm=2.0)[3]["coverage"]
            for s in range(3)
        ]
        covs.append(np.mean(got))
    assert covs[0] < covs[1] < covs[2]
    assert covs[0] < 0.1 and covs[2] > 0.3
    _, sem, inst, _ = specimen("hrtem", 128, 0.05, _rng(0), layout="none")
    assert inst.max() == 0 and np.all(sem == 1)
    _, sem, inst, _ = specimen("stem", 128, 0.05, _rng(0), layout="single")
    assert inst.max() == 1 and (inst == 1).mean() > 0.05


@pytest.mark.parametrize(("mode", "sign"), [("equal", 0), ("brighter", 1), ("darker", -1)])
def test_hrtem_particle_mean_relative_to_support(mode, sign):
    ideal, _sem, inst, _info = specimen(
        "hrtem", 256, 0.03, _rng(7), contrast_mode=mode, illumination=0.0, coverage=0.3
    )
    support = ideal[inst == 0].mean()
    means = ndimage.mean(ideal, inst, np.arange(1, inst.max() + 1))
    assert len(means) >= 3
    rel = (means - support) / support
    if sign == 0:
        assert np.all(np.abs(rel) < 0.03), rel
        # ... and yet the fringes make the particles stand out in local variance
        hp = ideal - ndimage.uniform_filter(ideal, 9)
        assert (hp[inst > 0] ** 2).mean() > 1.5 * (hp[inst == 0] ** 2).mean()
    else:
        assert np.all(sign * rel > 0.02), rel


# --------------------------------------------------------------------------- pixel size


def test_unresolvable_lattice_blurs_out_instead_of_aliasing():
    def interior_detail(px):
        ideal, _, inst, _ = specimen(
            "stem", 256, px, _rng(8), layout="single", lattice="square", lattice_nm=0.3
        )
        core = ndimage.binary_erosion(inst > 0, iterations=6)
        hp = ideal - ndimage.gaussian_filter(ideal, 3)
        return np.sqrt((hp[core] ** 2).mean()) / ideal[core].mean()

    assert interior_detail(0.03) > 0.1  # 10 px spacing: columns
    assert interior_detail(0.25) < 0.02  # 1.2 px spacing: smooth mean density

    # HRTEM fringes beyond Nyquist are dropped, and such particles still show by their mean
    _, _, inst, info = specimen(
        "hrtem", 128, 0.3, _rng(9), lattice_nm=0.2, contrast_mode="equal", layout="single"
    )
    assert inst.max() == 1
    assert max(info["particles"]["fringe_amplitudes"][0]) == 0
    assert info["particles"]["mean_offset"][0] != 0


# --------------------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("kind", KINDS)
def test_seed_reproduces_and_params_are_json(kind):
    a = simulate(kind, 96, seed=123)
    b = simulate(kind, 96, seed=123)
    c = simulate(kind, 96, seed=124)
    for name in ("noisy", "clean", "ideal", "semantic", "instances"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.params == b.params
    assert a.pixel_size_nm == b.pixel_size_nm and a.dose == b.dose
    assert not np.array_equal(a.noisy, c.noisy)
    text = json.dumps(a.params)
    assert json.loads(text) == a.params
    lo, hi = 0.5, 5000.0
    assert lo <= a.dose <= hi


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_dtypes_non_square(kind):
    s = simulate(kind, (96, 160), dose=30.0, seed=1)
    for name, dt in (
        ("noisy", np.float32),
        ("clean", np.float32),
        ("ideal", np.float32),
        ("semantic", np.uint8),
        ("instances", np.int32),
    ):
        arr = getattr(s, name)
        assert arr.shape == (96, 160), name
        assert arr.dtype == dt, name
    assert 0 <= s.ideal.min() and s.ideal.max() <= 1
    assert s.kind == kind and s.dose == 30.0


# --------------------------------------------------------------------------- switches


def _only(name: str) -> DistortionConfig:
    cfg = DistortionConfig.none()
    getattr(cfg, name).enabled = True
    cfg.xray.rate_per_mpx = (300.0, 300.0)  # make sure hits land on a small test image
    return cfg


@pytest.mark.parametrize("name", [f.name for f in fields(DistortionConfig)])
@pytest.mark.parametrize("kind", KINDS)
def test_each_switch_changes_output_only_when_on(name, kind):
    ideal = specimen(kind, 96, 0.04, _rng(10))[0]
    base_noisy, base_clean, _ = distort(ideal, 200.0, kind, _rng(11), DistortionConfig.none())
    noisy, clean, params = distort(ideal, 200.0, kind, _rng(11), _only(name))
    applicable = not (
        (kind == "hrtem" and name in STEM_ONLY) or (kind == "stem" and name in HRTEM_ONLY)
    )
    assert params[name]["applied"] == applicable
    if name in ("gain", "dark"):  # detector operating point: changes the expected value too
        assert not np.allclose(clean, base_clean)
    else:
        np.testing.assert_array_equal(clean, base_clean)
    if applicable:
        assert not np.array_equal(noisy, base_noisy)
    else:
        np.testing.assert_array_equal(noisy, base_noisy)
    # switched off, its parameter ranges do not matter
    off = _only(name)
    getattr(off, name).enabled = False
    noisy_off, _, _ = distort(ideal, 200.0, kind, _rng(11), off)
    np.testing.assert_array_equal(noisy_off, base_noisy)


@pytest.mark.parametrize("kind", KINDS)
def test_clean_is_free_of_noise_and_geometry(kind):
    ideal = specimen(kind, 128, 0.04, _rng(12))[0]
    full = DistortionConfig.full()
    for f in fields(full):
        getattr(full, f.name).probability = 1.0
    detector_only = DistortionConfig.none()
    detector_only.gain.enabled = True
    detector_only.dark.enabled = True
    n1, c1, p1 = distort(ideal, 80.0, kind, _rng(13), full)
    n2, c2, _p2 = distort(ideal, 80.0, kind, _rng(13), detector_only)
    np.testing.assert_array_equal(c1, c2)
    g = p1["gain"]["adu_per_e"]
    offset = g * p1["dark"]["rate_e_per_px"] + p1["dark"]["bias_adu"]
    np.testing.assert_allclose(c1, g * 80.0 * ideal + offset, rtol=1e-5)
    assert not np.array_equal(n1, n2)
    # quantised to integer ADU within the ADC range
    assert np.all(n1 == np.rint(n1)) and n1.min() >= 0 and n1.max() <= p1["gain"]["full_scale"]


def test_distort_accepts_a_real_micrograph(testdata):
    rsciio_tia = pytest.importorskip("rsciio.tia")
    path = testdata / "tkrem_hrstem_example.ser"
    if not path.exists():
        pytest.skip(f"{path.name} not in test data")
    img = rsciio_tia.file_reader(str(path))[0]["data"].astype(np.float32)[:256, :256]
    img = (img - img.min()) / (img.max() - img.min())
    noisy, clean, params = distort(img, 10.0, "stem", _rng(14))
    assert noisy.shape == clean.shape == img.shape
    assert np.corrcoef(clean.ravel(), img.ravel())[0, 1] > 0.999
    json.dumps(params)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: simulate("sem"), "kind"),
        (lambda: simulate("stem", size=8), "size"),
        (lambda: simulate("stem", size=(32, 32, 3)), "size"),
        (lambda: simulate("stem", size=64, dose=-1.0), "dose"),
        (lambda: simulate("stem", size=64, dose=float("nan")), "dose"),
        (lambda: specimen("stem", 64, 0.0, _rng()), "pixel_size_nm"),
        (lambda: specimen("stem", 64, 0.05, _rng(), colour="red"), "unknown specimen option"),
        (lambda: specimen("hrtem", 64, 0.05, _rng(), contrast_mode="grey"), "contrast_mode"),
        (lambda: distort(np.full((8, 8), 2.0), 10.0, "stem", _rng()), r"\[0, 1\]"),
        (lambda: distort(np.zeros((4, 8, 8)), 10.0, "stem", _rng()), "2D"),
        (lambda: distort(np.full((8, 8), np.nan), 10.0, "stem", _rng()), "NaN"),
        (lambda: distort(np.zeros((8, 8)), 0.0, "stem", _rng()), "dose"),
        (lambda: distort(np.zeros((8, 8)), 1.0, "stem", _rng(), config="full"), "DistortionConfig"),
    ],
)
def test_bad_input_gives_clear_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# --------------------------------------------------------------------------- models in detail


def test_fly_back_distorts_only_the_start_of_each_line():
    ideal = specimen("stem", 128, 0.03, _rng(15), coverage=0.4)[0]
    cfg = _only("fly_back")
    cfg.fly_back.decay_px = (4.0, 4.0)
    cfg.fly_back.amplitude_px = (8.0, 8.0)
    noisy, clean, params = distort(ideal, 100.0, "stem", _rng(16), cfg)
    assert params["fly_back"]["applied"]
    diff = np.abs(noisy - clean).mean(axis=0) / clean.mean()
    assert diff[:4].mean() > 0.02  # first columns: resampled from up to 8 px away
    assert diff[60:].max() < 1e-3  # exp(-60/4): untouched


def test_fast_gaussian_matches_a_full_resolution_filter():
    from napari_temseg.synth.fields import fast_gaussian

    img = specimen("stem", (200, 150), 0.02, _rng(17))[0]
    for sigma in (2.0, 9.0, 30.0):
        ref = ndimage.gaussian_filter(img, sigma, truncate=4.0)
        got = fast_gaussian(img, sigma)
        assert got.shape == img.shape
        assert np.sqrt(((got - ref) ** 2).mean()) < 0.02 * ref.std() + 1e-6


def test_scan_blur_acts_along_the_fast_scan_axis_only():
    ideal = specimen("stem", 128, 0.03, _rng(18), coverage=0.4)[0]
    cfg = _only("scan_blur")
    cfg.scan_blur.sigma_px = (1.0, 1.0)
    noisy, clean, _ = distort(ideal, 100.0, "stem", _rng(19), cfg)
    along = np.abs(np.diff(noisy, axis=1)).mean() / np.abs(np.diff(clean, axis=1)).mean()
    across = np.abs(np.diff(noisy, axis=0)).mean() / np.abs(np.diff(clean, axis=0)).mean()
    assert along < 0.75 and along < across - 0.1
    assert noisy.mean() == pytest.approx(clean.mean(), rel=0.01)


def test_detector_decay_smears_the_shot_noise_along_the_fast_scan():
    flat = np.full((128, 128), 0.5, np.float32)  # no structure: the residual is all noise
    cfg = DistortionConfig.poisson_only()
    cfg.detector_decay.enabled = True
    cfg.detector_decay.tau_px = (1.0, 1.0)
    noisy, clean, params = distort(flat, 200.0, "stem", _rng(30), cfg)
    white, _, _ = distort(flat, 200.0, "stem", _rng(30), DistortionConfig.poisson_only())
    a = np.exp(-1.0)  # y[i] = (1 - a) x[i] + a y[i-1]: neighbour correlation a
    assert params["detector_decay"] == {"applied": True, "tau_px": 1.0}
    assert neighbour_correlation(noisy - clean, 1) == pytest.approx(a, abs=0.05)
    assert abs(neighbour_correlation(noisy - clean, 0)) < 0.05  # lines stay independent
    assert abs(neighbour_correlation(white - clean, 1)) < 0.05
    # the signal is kept (unit gain) and the noise is lowered by sqrt((1 - a) / (1 + a))
    assert noisy.mean() == pytest.approx(clean.mean(), rel=0.01)
    ratio = (noisy - clean).std() / (white - clean).std()
    assert ratio == pytest.approx(np.sqrt((1 - a) / (1 + a)), rel=0.05)


def test_detector_decay_smears_the_read_out_noise_too():
    """The decay is the analog chain's bandwidth: the amplifier's noise goes through it, so
    a frame with no counting noise left still has its noise correlated along x only (a
    white read-out floor on top of smeared shot noise is what the real TIA frames lack)."""
    flat = np.full((128, 128), 0.5, np.float32)
    cfg = DistortionConfig.none()
    cfg.readout.enabled = True
    cfg.readout.sigma_e = (1.0, 1.0)
    white, clean, _ = distort(flat, 5.0, "stem", _rng(31), cfg)
    cfg.detector_decay.enabled = True
    cfg.detector_decay.tau_px = (1.0, 1.0)
    smeared, _, _ = distort(flat, 5.0, "stem", _rng(31), cfg)
    assert abs(neighbour_correlation(white - clean, 1)) < 0.05
    assert neighbour_correlation(smeared - clean, 1) == pytest.approx(np.exp(-1.0), abs=0.05)
    assert abs(neighbour_correlation(smeared - clean, 0)) < 0.05
    assert smeared.mean() == pytest.approx(clean.mean(), rel=0.01)  # the bias is kept


def test_full_set_leaves_the_detector_decay_off():
    """The benchmark sets are drawn with DistortionConfig.full(): the decay must not
    change their images; training switches it on explicitly."""
    assert not DistortionConfig.full().detector_decay.enabled
    s = simulate("stem", 96, pixel_size_nm=0.05, dose=50.0, seed=4)
    assert s.params["distortions"]["detector_decay"]["applied"] is False


def test_recorded_clean_is_the_noise_free_image_in_the_scan_geometry():
    # with counting noise off, the recorded image IS the scene at the probe positions
    cfg = DistortionConfig.none()
    cfg.drift.enabled = True
    cfg.drift.total_px = (8.0, 8.0)
    cfg.row_jitter.enabled = True
    s = simulate("stem", 128, pixel_size_nm=0.05, dose=100.0, seed=3, distortions=cfg)
    err_recorded = np.abs(s.noisy - s.recorded_clean).mean()
    err_scene = np.abs(s.noisy - s.clean).mean()
    assert err_recorded < 1e-3 * s.clean.mean() < err_scene
    h = simulate("hrtem", 64, pixel_size_nm=0.05, dose=100.0, seed=3)
    assert h.recorded_clean is h.clean
