"""Where training patches come from: (noisy, clean) pairs, normalised like inference does.

A *patch source* hands the training loop batches of normalised ``(noisy, clean)`` patches.
The normalisation is computed on the whole image the patches are cut from, exactly as
inference computes it on a whole frame, and stored in the checkpoint with the source's
description. :class:`PairSource` cuts patches from image pairs made on demand by any
function (the simulator now; the user's own images with added shot noise in issue 5).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from napari_temseg.models.normalize import Normalization

MakePair = Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]


@runtime_checkable
class PatchSource(Protocol):
    """What the training loop needs from its data."""

    normalization: Normalization

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` normalised patch pairs, each float32 of shape (n, 1, P, P)."""
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-able description of the training data, for the checkpoint."""
        ...


def augment_pair(
    a: np.ndarray, b: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The same random flip/transpose (one of the 8 square symmetries) of both arrays."""
    k = int(rng.integers(8))
    if k & 1:
        a, b = a[::-1], b[::-1]
    if k & 2:
        a, b = a[:, ::-1], b[:, ::-1]
    if k & 4 and a.shape[0] == a.shape[1]:
        a, b = a.T, b.T
    return a, b


class PairSource:
    """Random patches from image pairs ``make_pair(rng) -> (noisy, clean)``.

    Each pair serves ``patches_per_image`` patches before a new one is made (images are
    costly to make, patches cheap to cut). With probability ``clean_fraction`` the clean
    image is also the input, so the model learns to leave clean images alone. Noisy and
    clean are normalised with the statistics of the *input* image, as inference will.
    """

    def __init__(
        self,
        make_pair: MakePair,
        patch: int = 128,
        normalization: Normalization | None = None,
        patches_per_image: int = 4,
        clean_fraction: float = 0.0,
        augment: bool = True,
        description: dict[str, Any] | None = None,
    ) -> None:
        if patch < 16:
            raise ValueError(f"patch must be at least 16 pixels, got {patch}")
        if not 0 <= clean_fraction <= 1:
            raise ValueError(f"clean_fraction must be in [0, 1], got {clean_fraction}")
        self.make_pair = make_pair
        self.patch = patch
        self.normalization = normalization or Normalization()
        self.patches_per_image = max(1, patches_per_image)
        self.clean_fraction = clean_fraction
        self.augment = augment
        self.description = description or {}
        self._current: tuple[np.ndarray, np.ndarray] | None = None
        self._uses = 0
        self._rng: np.random.Generator | None = None
        self._stats: dict[bool, tuple[float, float]] = {}

    def _next_pair(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        # a different generator (e.g. the validation draw) never reuses the training image
        if self._current is None or self._uses >= self.patches_per_image or self._rng is not rng:
            self._rng = rng
            noisy, clean = self.make_pair(rng)
            noisy = np.asarray(noisy, np.float32)
            clean = np.asarray(clean, np.float32)
            if noisy.shape != clean.shape or noisy.ndim != 2:
                raise ValueError(
                    f"make_pair must return two 2D images of one shape, got {noisy.shape}, {clean.shape}"
                )
            if min(noisy.shape) < self.patch:
                raise ValueError(
                    f"images of shape {noisy.shape} are smaller than patch {self.patch}"
                )
            self._current, self._uses, self._stats = (noisy, clean), 0, {}
        self._uses += 1
        return self._current

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        p = self.patch
        xs = np.empty((n, 1, p, p), np.float32)
        ys = np.empty((n, 1, p, p), np.float32)
        for i in range(n):
            noisy, clean = self._next_pair(rng)
            use_clean = bool(rng.random() < self.clean_fraction)
            inp = clean if use_clean else noisy
            if use_clean not in self._stats:
                self._stats[use_clean] = self.normalization.stats(inp)
            stats = self._stats[use_clean]
            y0 = int(rng.integers(inp.shape[0] - p + 1))
            x0 = int(rng.integers(inp.shape[1] - p + 1))
            a, b = inp[y0 : y0 + p, x0 : x0 + p], clean[y0 : y0 + p, x0 : x0 + p]
            if self.augment:
                a, b = augment_pair(a, b, rng)
            xs[i, 0] = self.normalization.apply(a, stats)
            ys[i, 0] = self.normalization.apply(b, stats)
        np.nan_to_num(xs, copy=False)
        return xs, ys

    def describe(self) -> dict[str, Any]:
        return {
            **self.description,
            "patch": self.patch,
            "clean_fraction": self.clean_fraction,
            "augment": self.augment,
        }


class MixedSource:
    """Batches drawn from two patch sources: ``round(n * share)`` patches from ``second``,
    the rest from ``first``, whose normalisation and description stand for the mix.

    Why: adaptation (``engine.adapt``) mixes simulated pairs with clean targets and the
    user's own frames with the starting model's averaged output as targets; either alone
    drifts (the simulator's targets do not say what a real frame shows, the frames' own
    targets are no better than the model that made them)."""

    def __init__(self, first: PatchSource, second: PatchSource, share: float) -> None:
        if not 0 <= share <= 1:
            raise ValueError(f"share must be in [0, 1], got {share}")
        self.first, self.second, self.share = first, second, share
        self.normalization = first.normalization

    def sample_parts(self, n: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
        """The batch as its parts, ``first``'s then ``second``'s (a part of no patch left
        out), for a caller that scores them apart."""
        k = round(n * self.share)
        return [s.sample(m, rng) for s, m in ((self.first, n - k), (self.second, k)) if m]

    @staticmethod
    def join(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.join(self.sample_parts(n, rng))

    def describe(self) -> dict[str, Any]:
        return {**self.first.describe(), "mixed_with": self.second.describe(), "share": self.share}


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if hi > lo else float(lo)


#: what a simulated pair's target is: the scene where the scan recorded it (``recorded``,
#: noise and artefacts removed, geometry kept) or the undistorted scene (``scene``)
TARGETS = ("recorded", "scene")


class _SimulatedPair:
    """``make_pair`` for the simulator; a class (not a closure) so worker processes can
    receive it (:class:`ParallelSource`)."""

    def __init__(
        self,
        kind: str,
        size: int,
        doses,
        pixels,
        config: Any,
        target: str,
        counting_fraction: float = 0.0,
        low_dose: tuple[float, float] | None = None,
    ) -> None:
        self.kind, self.size, self.doses, self.pixels = kind, size, doses, pixels
        self.config, self.target = config, target
        self.counting_fraction = counting_fraction
        self.low_dose = low_dose

    def __call__(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        from napari_temseg.synth import DistortionConfig, simulate

        counting = self.counting_fraction > 0 and rng.random() < self.counting_fraction
        doses = self.doses
        if self.low_dose is not None and rng.random() < self.low_dose[0]:
            doses = (doses[0], min(self.low_dose[1], doses[1]))

        s = simulate(
            self.kind,
            self.size,
            pixel_size_nm=_log_uniform(rng, *self.pixels),
            dose=_log_uniform(rng, *doses),
            seed=int(rng.integers(2**63)),
            distortions=DistortionConfig.poisson_only() if counting else self.config,
        )
        return s.noisy, (s.recorded_clean if self.target == "recorded" else s.clean)


def _custom_distortions(config: Any) -> str:
    """A custom distortion set as what it changes in the full one ("custom" alone would
    let two different sets pass for one in a record or a resumed run)."""
    from dataclasses import asdict

    from napari_temseg.synth import DistortionConfig

    def flat(d: dict, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out

    full, mine = flat(asdict(DistortionConfig.full())), flat(asdict(config))
    changed = [f"{k}={mine[k]}" for k in sorted(mine) if mine[k] != full.get(k)]
    return "custom: full, with " + ", ".join(changed) if changed else "full"


def simulated_source(
    kind: str,
    size: int = 256,
    patch: int = 128,
    dose_range: tuple[float, float] | None = None,
    pixel_size_range_nm: tuple[float, float] | None = None,
    distortions: Any = None,
    clean_fraction: float = 0.1,
    patches_per_image: int = 4,
    normalization: Normalization | None = None,
    target: str = "recorded",
    counting_fraction: float = 0.0,
    low_dose: tuple[float, float] | None = None,
) -> PairSource:
    """Patches from the project's simulator: ``kind`` "stem" or "hrtem".

    Dose (electrons per pixel) and pixel size are drawn log-uniformly from the given
    ranges (default: the simulator's own wide ranges); ``distortions`` None means
    ``DistortionConfig.full()``. The target is noise- and artefact-free, in the noisy
    image's units: with ``target="recorded"`` (default) in the geometry the scan recorded
    (``SynthSample.recorded_clean``), with ``"scene"`` the undistorted scene
    (``SynthSample.clean``), which asks the network to undo random row jitter and so
    teaches it to blur along the scan. ``counting_fraction``: the share of images recorded
    by an ideal counting detector instead (shot noise only: whole electron counts, with no
    dark current, read-out noise, gain or offset), which the full set never produces and on which
    networks trained without it fell 1.3-2.7 dB behind a Gaussian filter
    (``benchmarks/bench_per_distortion.py``). ``low_dose`` (share, max e/px): that share of
    the images draws its dose from the bottom of the range up to max instead, where the
    networks' outputs kept a grain that a Gaussian of the output removed (at 1-3 e/px a
    Gaussian of 4-8 px took 30-70 % off the bundled HRTEM model's error).
    """
    from napari_temseg.synth import DOSE_RANGE, PIXEL_SIZE_RANGE_NM, DistortionConfig

    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {TARGETS}")
    doses = tuple(dose_range or DOSE_RANGE)
    pixels = tuple(pixel_size_range_nm or PIXEL_SIZE_RANGE_NM[kind])
    config = distortions if distortions is not None else DistortionConfig.full()
    if not 0 <= counting_fraction <= 1:
        raise ValueError(f"counting_fraction must be in [0, 1], got {counting_fraction}")
    if low_dose is not None and not (0 <= low_dose[0] <= 1 and low_dose[1] > doses[0]):
        raise ValueError(
            f"low_dose must be (share in [0, 1], max above {doses[0]}), got {low_dose}"
        )
    make_pair = _SimulatedPair(
        kind, size, doses, pixels, config, target, counting_fraction, low_dose
    )
    description = {
        "source": "napari_temseg.synth.simulate",
        "kind": kind,
        "image_size": size,
        "dose_range_e_per_px": list(doses),
        "pixel_size_range_nm": list(pixels),
        "distortions": "full" if distortions is None else _custom_distortions(config),
        "target": target,
        "counting_detector_fraction": counting_fraction,
        **({"low_dose_share_max": list(low_dose)} if low_dose is not None else {}),
    }
    return PairSource(
        make_pair,
        patch=patch,
        normalization=normalization,
        patches_per_image=patches_per_image,
        clean_fraction=clean_fraction,
        description=description,
    )


_WORKER_SOURCE: PairSource | None = None


def _worker_init(source: PairSource) -> None:
    global _WORKER_SOURCE
    _WORKER_SOURCE = source


def _worker_patches(seed: int) -> tuple[np.ndarray, np.ndarray]:
    assert _WORKER_SOURCE is not None
    return _WORKER_SOURCE.sample(_WORKER_SOURCE.patches_per_image, np.random.default_rng(seed))


class ParallelSource:
    """A :class:`PairSource` drawn by ``workers`` processes, for a GPU that outruns one core.

    Each task makes one image (``patches_per_image`` patches of it) from its own seed;
    results are used in task order, so a run stays seeded. At most ``4 * workers`` tasks
    are in flight. ``sample`` ignores its ``rng`` (the stream is fixed by ``seed``): draw
    the validation set from the wrapped source itself. :meth:`close` (or ``with``) stops
    the workers.
    """

    def __init__(self, source: PairSource, workers: int, seed: int = 0) -> None:
        import multiprocessing as mp
        from collections import deque

        self.source = source
        self.normalization = source.normalization
        self._seeds = np.random.SeedSequence([seed, 7])
        # fork: the workers inherit the imported simulator; they never touch CUDA
        self._pool = mp.get_context("fork").Pool(
            max(1, workers), initializer=_worker_init, initargs=(source,)
        )
        self._pending: deque = deque()
        self._depth = 4 * max(1, workers)
        self._buf_x = np.empty((0, 1, source.patch, source.patch), np.float32)
        self._buf_y = self._buf_x

    def _submit(self) -> None:
        while len(self._pending) < self._depth:
            seed = int(self._seeds.spawn(1)[0].generate_state(1, np.uint64)[0])
            self._pending.append(self._pool.apply_async(_worker_patches, (seed,)))

    def sample(
        self, n: int, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [self._buf_x], [self._buf_y]
        have = len(self._buf_x)
        while have < n:
            self._submit()
            x, y = self._pending.popleft().get()
            xs.append(x)
            ys.append(y)
            have += len(x)
        self._submit()
        x_all, y_all = np.concatenate(xs), np.concatenate(ys)
        self._buf_x, self._buf_y = x_all[n:], y_all[n:]
        return x_all[:n], y_all[:n]

    def describe(self) -> dict[str, Any]:
        return self.source.describe()

    def close(self) -> None:
        self._pool.terminate()
        self._pool.join()

    def __enter__(self) -> ParallelSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
