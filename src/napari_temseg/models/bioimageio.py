"""Model exchange: export a checkpoint as a bioimage.io model package, and import one back.

A package (a zip, format 0.5 of the bioimage.io model spec) holds:

- ``weights.pt``: the state dict for ``pytorch_state_dict`` (plain tensors; the architecture
  is :class:`BioimageioNet` from this module, so reading it needs napari-temseg);
- ``weights_torchscript.pt``: the same network traced to TorchScript, for tools that do not
  have napari-temseg (deepImageJ, bioimageio.core, ...);
- ``test_input.npy`` / ``test_output.npy`` (and the same as ``sample_*.tif``),
  ``cover.png``, ``README.md``, ``environment.yaml`` and ``rdf.yaml``.

The rdf declares our input normalisation as far as the spec can say it (per-frame
percentiles to 0/1 with ``scale_range``, then ``clip``); segmenters end in a softmax inside
the exported network, so every tool gets class probabilities. The full checkpoint metadata
is kept under ``config["napari-temseg"]``, which is what :func:`import_bioimageio` restores
a native model from: it reads the state dict with ``torch.load(weights_only=True)`` and
never imports or unpickles code from a package.

bioimageio.core / bioimageio.spec are optional (``pip install napari-temseg[bioimageio]``)
and imported only by :func:`export_bioimageio` and :func:`validate_bioimageio`; importing
a package needs only PyYAML and torch. No Qt.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from torch import nn

from napari_temseg import defaults
from napari_temseg.models.bundled import WEIGHTS_DIR, load_model, resolve_model
from napari_temseg.models.checkpoint import _plain, save_checkpoint
from napari_temseg.models.factory import build_model
from napari_temseg.models.normalize import Normalization
from napari_temseg.models.trust import build_trusted, check_header

#: the key under the rdf's ``config`` that marks a package written here
CONFIG_KEY = "napari-temseg"
EXPORT_FORMAT = "napari-temseg-bioimageio"
EXPORT_FORMAT_VERSION = 1
#: the state dict in a package is :class:`BioimageioNet`'s: the native network under ``net.``
PREFIX = "net."
INPUT_ID = "raw"
#: ScaleRangeKwargs.eps of the spec: ``(x - lo) / (hi - lo + eps)``
SCALE_RANGE_EPS = 1e-6
#: side of the default synthetic test image, and the largest test image kept from a sample
DEFAULT_TEST_SIZE = 128
MAX_TEST_SIZE = 256
INSTALL_HINT = "pip install napari-temseg[bioimageio]"
#: an exported rdf.yaml is a few kB and our weights a few MB: far larger is not ours
MAX_RDF_BYTES = 1 << 20
MAX_MEMBER_BYTES = 1 << 30

CITATIONS = {
    "unet": (
        "Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical Image "
        "Segmentation. MICCAI 2015.",
        "10.1007/978-3-319-24574-4_28",
    ),
    "rdn": (
        "Zhang, Tian, Kong, Zhong, Fu. Residual Dense Network for Image Super-Resolution. "
        "CVPR 2018.",
        "10.1109/CVPR.2018.00262",
    ),
}


class BioimageioError(ValueError):
    """A package that cannot be imported (not written by napari-temseg, damaged, ...)."""


class BioimageioNet(nn.Module):
    """The network a package describes: a napari-temseg network (``config`` as in
    :func:`~napari_temseg.models.build_model`), with a softmax over channels for
    segmenters so that the outputs are class probabilities.

    It pads the input to the size multiple the network needs itself, the way the network
    would (reflect for the U-Net, replicate for the RDN), so the numbers are the native
    network's for any input size; doing it here, without a Python branch, is what lets
    the traced TorchScript copy handle every size and not only the one it was traced at.

    It is the ``pytorch_state_dict`` architecture of exported packages; its state dict is
    the native one with every key under ``net.``.

    ``smoothing``: an adapted denoiser's final blend with its smoothed output (the
    header's ``postfilter``, ``engine.postfilter``), done here as napari-temseg does it
    after the network: without it a package of such a model gave other tools a
    different image than napari-temseg (up to a third of the output's spread).
    """

    def __init__(
        self, config: dict[str, Any], softmax: bool = False, smoothing: dict | None = None
    ) -> None:
        super().__init__()
        self.net = build_model(dict(config))
        self.softmax = bool(softmax)
        self.multiple = _multiple(self.net.config)
        self.pad_mode = "reflect" if self.net.config["arch"] == "unet" else "replicate"
        spec = smoothing or {}
        self.sigma = float(spec.get("sigma") or 0.0)
        self.weight = float(spec.get("weight", 1.0)) if self.sigma else 1.0
        self.radius = int(4.0 * self.sigma + 0.5)  # scipy's gaussian_filter, truncate 4
        g = torch.exp(
            -0.5 * (torch.arange(-self.radius, self.radius + 1.0) / (self.sigma or 1)) ** 2
        )
        self.register_buffer("taps", (g / g.sum()).view(1, 1, 1, -1), persistent=False)

    def _smooth(self, y: torch.Tensor) -> torch.Tensor:
        """scipy's ``gaussian_filter(mode="reflect")``: the edge mirrored with itself."""
        r = self.radius
        for _ in range(2):  # along x, then (transposed) along y
            y = torch.cat([y[..., :r].flip(-1), y, y[..., -r:].flip(-1)], dim=-1)
            y = F.conv2d(y, self.taps).transpose(-1, -2)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        ph = (self.multiple - h % self.multiple) % self.multiple
        pw = (self.multiple - w % self.multiple) % self.multiple
        y = self.net(F.pad(x, (0, pw, 0, ph), mode=self.pad_mode))[..., :h, :w]
        if self.sigma:
            y = self.weight * y + (1 - self.weight) * self._smooth(y)
        return torch.softmax(y, dim=1) if self.softmax else y


# --------------------------------------------------------------------------- helpers


def _require_bioimageio() -> None:
    """Import bioimageio.core/spec, or say how to install them; refuse a known-bad pair."""
    try:
        import bioimageio.core
        import bioimageio.spec
    except ImportError as exc:
        raise ImportError(
            f"bioimage.io export and validation need bioimageio.core: {INSTALL_HINT} ({exc})"
        ) from exc
    import pydantic
    from packaging.version import Version

    spec_v, pyd_v = Version(bioimageio.spec.__version__), Version(pydantic.VERSION)
    if spec_v < Version("0.5.14") and pyd_v >= Version("2.14"):
        # spec < 0.5.14 hands SerializationInfo to pydantic's serializer as an index key,
        # which pydantic >= 2.14 refuses: no model description can be loaded or written
        raise ImportError(
            f"bioimageio.spec {spec_v} does not work with pydantic {pyd_v}: "
            f"pip install 'pydantic<2.14' (what {INSTALL_HINT} installs), or a "
            "bioimageio.spec >= 0.5.14"
        )


def _resolve(model_or_path: Any) -> tuple[nn.Module, dict[str, Any], str, bool]:
    """-> (the network, checkpoint meta without ``config``, a name, whether it is bundled)."""
    bundled = False
    if isinstance(model_or_path, tuple):
        model, meta = model_or_path
        default_name = str(meta.get("name") or "model")
    elif isinstance(model_or_path, nn.Module):
        # like the engine: a bare module is a denoiser with the default normalisation
        model, meta, default_name = model_or_path, {"task": "denoise"}, "model"
    else:
        path = resolve_model(model_or_path)
        bundled = path.resolve().parent == WEIGHTS_DIR
        model, meta = load_model(path)
        default_name = str(meta.get("name") or path.stem)
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or config.get("arch") not in CITATIONS:
        raise ValueError(
            f"only napari-temseg denoisers and segmenters ({', '.join(CITATIONS)}) can be "
            f"exported; got a {type(model).__name__} with config {config!r}"
        )
    meta = {k: v for k, v in dict(meta).items() if k != "config"}
    task = meta.get("task", "denoise")
    if task not in ("denoise", "segment"):
        raise ValueError(f"meta['task'] must be 'denoise' or 'segment', got {task!r}")
    meta["task"] = task
    return model, _plain(meta), default_name, bundled


def _multiple(config: dict[str, Any]) -> int:
    """The size multiple a network pads its input to."""
    if config["arch"] == "unet":
        return 2 ** (int(config.get("depth", 4)) - 1)
    return int(config.get("scale", 1))


def _class_names(meta: dict[str, Any], k: int) -> list[str]:
    names = [str(n) for n in meta.get("class_names") or []]
    return names + [f"class {i}" for i in range(len(names) + 1, k + 1)]


def _identifier(text: str, fallback: str) -> str:
    """A valid spec Identifier (channel names): letters, digits and underscores."""
    out = "".join(c if c.isalnum() else "_" for c in text.strip()).strip("_")
    if not out or not out[0].isalpha():
        out = f"{fallback}_{out}" if out else fallback
    return out.lower()


def _sample_image(sample: Any, meta: dict[str, Any], min_size: int) -> np.ndarray:
    """A 2D float32 test image: ``sample`` (array or file), else a synthetic micrograph;
    centre-cropped to at most ``MAX_TEST_SIZE`` pixels a side."""
    if sample is None:
        from napari_temseg.synth import PIXEL_SIZE_RANGE_NM, simulate

        kind = meta.get("modality") if meta.get("modality") in PIXEL_SIZE_RANGE_NM else "stem"
        px = meta.get("pixel_size_nm")
        lo, hi = PIXEL_SIZE_RANGE_NM[kind]
        px = float(px) if isinstance(px, int | float) and lo <= px <= hi else math.sqrt(lo * hi)
        image = simulate(kind, DEFAULT_TEST_SIZE, pixel_size_nm=px, dose=50.0, seed=0).noisy
    elif isinstance(sample, str | Path):
        from napari_temseg.io import read

        found = [d for d in read(sample) if d.kind in ("image", "stack")]
        if not found:
            raise ValueError(f"{sample}: holds no image to use as the test input")
        image = found[0].data
    else:
        image = sample
    while getattr(image, "ndim", 2) > 2:  # a stack (numpy or lazy dask): its first frame
        image = image[0]
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype.kind not in "uif":
        raise ValueError(
            f"the sample must be a grayscale 2D image, got {image.shape} {image.dtype}"
        )
    h, w = (min(s, MAX_TEST_SIZE) for s in image.shape)
    if min(h, w) < min_size:
        raise ValueError(
            f"the sample is {image.shape[0]}x{image.shape[1]} px; the test image needs at "
            f"least {min_size}x{min_size}"
        )
    y0, x0 = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    image = image[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    if not np.isfinite(image).all():
        raise ValueError("the sample holds NaN or infinite values")
    return image


def declared_preprocessing(image: np.ndarray, norm: Normalization) -> np.ndarray:
    """What a package's ``scale_range`` + ``clip`` preprocessing does to one frame.

    Percentiles of the whole frame (numpy's "linear" method, as bioimageio.core computes
    them), ``(x - lo) / (hi - lo + 1e-6)``, clipped to ``[-clip, clip]``. Ours differs only
    in the ``eps``, in taking percentiles of a strided subsample of frames above
    ``norm.max_samples`` pixels and in its fallback for (near) constant frames.
    """
    x = np.asarray(image, np.float32)
    if norm.method == "none":
        return x
    lo, hi = np.percentile(x, [norm.low, norm.high])
    y = (x - lo) / (hi - lo + SCALE_RANGE_EPS)
    if norm.clip:
        y = np.clip(y, -norm.clip, norm.clip)
    return y.astype(np.float32)


def _to_rgb_gray(x: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(x, [0.5, 99.5])
    g = np.clip((x - lo) / max(hi - lo, 1e-12), 0, 1)
    return np.repeat((g * 255).astype(np.uint8)[..., None], 3, axis=2)


def _hex_rgb(color: Any) -> tuple[int, int, int]:
    s = str(color).lstrip("#")
    try:
        return (int(s[0:2], 16), int(s[2:4], 16), int(s[4:6], 16))
    except (ValueError, IndexError):
        return (128, 128, 128)


def _write_cover(path: Path, image: np.ndarray, output: np.ndarray, meta: dict) -> None:
    """Input | output side by side (a 2:1 PNG); a segmenter's output as coloured classes."""
    from PIL import Image

    left = _to_rgb_gray(image)
    if meta["task"] == "segment":
        k = output.shape[0]
        colors = [*(meta.get("class_colors") or [])]
        palette = np.array(
            [_hex_rgb(c) for c in colors[:k]] + [(128, 128, 128)] * (k - len(colors[:k]))
        )
        labels = output.argmax(0)
        right = (0.5 * left + 0.5 * palette[labels]).astype(np.uint8)
    else:
        right = _to_rgb_gray(output[0])
    gap = np.full((left.shape[0], 4, 3), 255, np.uint8)
    Image.fromarray(np.concatenate([left, gap, right], axis=1)).save(path)


def _readme(
    name: str, description: str, meta: dict, config: dict, norm: Normalization, k: int
) -> str:
    task = meta["task"]
    lines = [
        f"# {name}",
        "",
        description,
        "",
        "Exported from [napari-temseg](https://github.com/napari-temseg/napari-temseg) "
        f"(a {config['arch']} {'segmenter' if task == 'segment' else 'denoiser'} for "
        "TEM/STEM micrographs).",
        "",
        "## Input",
        "",
        "One grayscale micrograph, axes (batch, channel, y, x), one channel, float32, "
        f"at least {max(32, _multiple(config))} pixels high and wide (any size above).",
        "",
    ]
    if norm.method == "percentile":
        lines += [
            f"Preprocessing (declared in the rdf): each frame's {norm.low:g} and "
            f"{norm.high:g} percentiles are mapped to 0 and 1 (`scale_range`)"
            + (
                f", then values are clipped to [-{norm.clip:g}, {norm.clip:g}] (`clip`)."
                if norm.clip
                else "."
            ),
            "",
        ]
    lines += ["## Output", ""]
    if task == "segment":
        names = ", ".join(f"{i + 1}: {n}" for i, n in enumerate(_class_names(meta, k)))
        lines += [
            f"Class probabilities, {k} channels (softmax inside the network): {names}. "
            "The class of a pixel is the channel with the highest probability (+1 for "
            "napari-temseg's label ids).",
        ]
        if meta.get("pixel_size_nm"):
            lines += ["", f"Trained at {meta['pixel_size_nm']:g} nm/px."]
    else:
        lines += [
            "The denoised image in normalised units (the preprocessed input's scale). To get "
            "back detector units, invert the preprocessing with the input frame's "
            "percentiles: `out * (hi - lo) + lo` (napari-temseg does this itself).",
        ]
        post = meta.get("postfilter") or {}
        if post.get("sigma"):
            lines += [
                "",
                f"The network's output is blended with its Gaussian smoothing (sigma "
                f"{post['sigma']:g} px, weight of the unsmoothed output "
                f"{post.get('weight', 0.0):g}), fitted when the model was adapted to its "
                "frames; it is done inside the network, as napari-temseg does it.",
            ]
    lines += [
        "",
        "The network is fully convolutional: predict whole images where memory allows. "
        f"Tiles see less context at their edges; napari-temseg uses {defaults.TILE} px tiles "
        f"overlapping by {defaults.OVERLAP} px with blended edges (no halo is declared here, "
        "so tools that tile by themselves may show seams), and it mirrors the image's border "
        "by the overlap before predicting: the zero-padded convolutions answer differently "
        "on the outermost pixels otherwise.",
        "",
        "## Validation",
        "",
        "`test_input.npy` / `test_output.npy` were computed through the declared "
        "preprocessing; `bioimageio test` reproduces them from both weight formats. "
        "Quantitative validation of the model itself: see the napari-temseg documentation "
        "(docs/denoise.md, docs/segment.md).",
        "",
        "## Use",
        "",
        "- napari-temseg: `temseg import-bioimageio PACKAGE.zip model.safetensors`, then use "
        "it like any checkpoint (this restores the exact native model).",
        "- bioimageio.core: `bioimageio predict PACKAGE.zip --inputs image.tif` or "
        "`bioimageio.core.predict(model=..., inputs=...)`.",
        "- deepImageJ / other tools: the torchscript weights need only PyTorch.",
        "",
    ]
    return "\n".join(lines)


ENVIRONMENT = """\
name: napari-temseg
channels:
  - conda-forge
  - nodefaults
dependencies:
  - python >=3.10
  - pytorch >=2.1
  - pip
  - pip:
      - napari-temseg
"""


# --------------------------------------------------------------------------- export


def package_path(output_path: str | Path) -> Path:
    """Where :func:`export_bioimageio` writes: ``output_path``, ``.zip`` added if missing."""
    path = Path(output_path).expanduser()
    return path if path.suffix.lower() == ".zip" else path.with_name(path.name + ".zip")


def export_bioimageio(
    model_or_path: Any,
    output_path: str | Path,
    *,
    name: str | None = None,
    authors: list[str] | None = None,
    description: str | None = None,
    sample: Any = None,
    license: str = "BSD-3-Clause",
) -> Path:
    """Write ``model_or_path`` (a bundled model's name, a checkpoint file or a
    ``(module, meta)`` pair) as a bioimage.io model package zip at ``output_path``.

    ``sample``: a 2D image (array or image file) for the test tensors and the cover;
    default a deterministic synthetic micrograph. ``authors``: names (default: the
    napari-temseg developers for bundled models, else "unknown"). Returns the zip's path.
    The package's format is checked by bioimageio.spec while it is written; run
    :func:`validate_bioimageio` for the full model test.
    """
    _require_bioimageio()
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as bio

    model, meta, default_name, bundled = _resolve(model_or_path)
    config = dict(model.config)
    task = meta["task"]
    norm = Normalization.from_dict(meta.get("normalization"))
    k = int(config.get("out_channels", 1))
    if task == "denoise" and k != 1:
        raise ValueError(f"a denoiser has one output channel; this one has {k}")
    if norm.method == "percentile" and norm.high <= 1:
        raise ValueError(f"bioimage.io needs an upper percentile above 1, got {norm.high}")
    # any size from 32 px (at least one padding multiple: reflect padding needs that)
    min_size = max(32, _multiple(config))

    output_path = package_path(output_path)
    name = (name or f"{default_name} (napari-temseg)").strip()
    description = (
        description
        or str(meta.get("description") or "").strip()
        or ("TEM/STEM segmenter" if task == "segment" else "TEM/STEM denoiser")
    )
    if authors is None:
        authors = ["napari-temseg developers" if bundled else "unknown"]
    authors = [str(a).strip() for a in authors if str(a).strip()] or ["unknown"]

    # a CPU copy in eval mode: the caller's module is left where and as it is
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    smoothing = meta.get("postfilter") if task == "denoise" else None
    wrapper = BioimageioNet(config, softmax=task == "segment", smoothing=smoothing).eval()
    wrapper.net.load_state_dict(state, strict=True)
    image = _sample_image(sample, meta, min_size)
    x = torch.from_numpy(declared_preprocessing(image, norm))[None, None]
    with torch.no_grad():
        out = wrapper(x).numpy().astype(np.float32)

    out_id = "probabilities" if task == "segment" else "denoised"
    if task == "segment":
        channel_names = [_identifier(n, "class") for n in _class_names(meta, k)]
        if len(set(channel_names)) != k:
            channel_names = [f"class_{i + 1}" for i in range(k)]
    else:
        channel_names = ["denoised"]

    with tempfile.TemporaryDirectory(prefix="temseg-bioimageio-") as tmp:
        d = Path(tmp)
        np.save(d / "test_input.npy", image[None, None])
        np.save(d / "test_output.npy", out)
        tifffile.imwrite(d / "sample_input.tif", image)
        tifffile.imwrite(d / "sample_output.tif", out[0])
        torch.save({PREFIX + key: v for key, v in state.items()}, d / "weights.pt")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # trace deprecation and shape-branch warnings
            traced = torch.jit.trace(wrapper, x, check_trace=False)
        traced.save(str(d / "weights_torchscript.pt"))
        _write_cover(d / "cover.png", image, out[0], meta)
        (d / "README.md").write_text(_readme(name, description, meta, config, norm, k))
        (d / "environment.yaml").write_text(ENVIRONMENT)

        preprocessing: list[Any] = []
        if norm.method == "percentile":
            preprocessing.append(
                bio.ScaleRangeDescr(
                    kwargs=bio.ScaleRangeKwargs(
                        axes=[bio.AxisId("y"), bio.AxisId("x")],
                        min_percentile=float(norm.low),
                        max_percentile=float(norm.high),
                        eps=SCALE_RANGE_EPS,
                    )
                )
            )
            if norm.clip:
                preprocessing.append(
                    bio.ClipDescr(
                        kwargs=bio.ClipKwargs(min=-float(norm.clip), max=float(norm.clip))
                    )
                )
        size = bio.ParameterizedSize(min=min_size, step=1)
        inputs = [
            bio.InputTensorDescr(
                id=bio.TensorId(INPUT_ID),
                description="grayscale TEM/STEM micrograph (detector units)",
                axes=[
                    bio.BatchAxis(),
                    bio.ChannelAxis(channel_names=[bio.Identifier("intensity")]),
                    bio.SpaceInputAxis(id=bio.AxisId("y"), size=size),
                    bio.SpaceInputAxis(id=bio.AxisId("x"), size=size),
                ],
                test_tensor=bio.FileDescr(source=d / "test_input.npy"),
                sample_tensor=bio.FileDescr(source=d / "sample_input.tif"),
                data=bio.IntervalOrRatioDataDescr(type="float32"),
                preprocessing=preprocessing,
            )
        ]
        outputs = [
            bio.OutputTensorDescr(
                id=bio.TensorId(out_id),
                description=(
                    "class probabilities (softmax over channels)"
                    if task == "segment"
                    else "denoised image in normalised units (see README)"
                ),
                axes=[
                    bio.BatchAxis(),
                    bio.ChannelAxis(channel_names=[bio.Identifier(c) for c in channel_names]),
                    bio.SpaceOutputAxis(
                        id=bio.AxisId("y"),
                        size=bio.SizeReference(
                            tensor_id=bio.TensorId(INPUT_ID), axis_id=bio.AxisId("y")
                        ),
                    ),
                    bio.SpaceOutputAxis(
                        id=bio.AxisId("x"),
                        size=bio.SizeReference(
                            tensor_id=bio.TensorId(INPUT_ID), axis_id=bio.AxisId("x")
                        ),
                    ),
                ],
                test_tensor=bio.FileDescr(source=d / "test_output.npy"),
                sample_tensor=bio.FileDescr(source=d / "sample_output.tif"),
                data=bio.IntervalOrRatioDataDescr(type="float32"),
            )
        ]
        torch_version = bio.Version(torch.__version__.split("+")[0])
        weights = bio.WeightsDescr(
            pytorch_state_dict=bio.PytorchStateDictWeightsDescr(
                source=d / "weights.pt",
                architecture=bio.ArchitectureFromLibraryDescr(
                    callable=bio.Identifier(BioimageioNet.__name__),
                    import_from=__name__,
                    kwargs={
                        "config": config,
                        "softmax": task == "segment",
                        **({"smoothing": dict(smoothing)} if smoothing else {}),
                    },
                ),
                pytorch_version=torch_version,
                dependencies=bio.FileDescr(source=d / "environment.yaml"),
            ),
            torchscript=bio.TorchscriptWeightsDescr(
                source=d / "weights_torchscript.pt",
                pytorch_version=torch_version,
                parent="pytorch_state_dict",
            ),
        )
        from napari_temseg import __version__

        native = {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_FORMAT_VERSION,
            "napari_temseg_version": __version__,
            "architecture": _plain(config),
            "state_dict_prefix": PREFIX,
            "meta": meta,
        }
        text, doi = CITATIONS[config["arch"]]
        descr = bio.ModelDescr(
            name=name,
            description=description,
            authors=[bio.Author(name=a) for a in authors],
            cite=[bio.CiteEntry(text=text, doi=bio.Doi(doi))],
            license=bio.LicenseId(license),
            documentation=bio.FileDescr(source=d / "README.md"),
            covers=[bio.FileDescr(source=d / "cover.png")],
            tags=[
                "napari-temseg",
                "electron-microscopy",
                str(meta.get("modality") or "tem"),
                "2d",
                "pytorch",
                config["arch"],
                "semantic-segmentation" if task == "segment" else "denoising",
            ],
            inputs=inputs,
            outputs=outputs,
            weights=weights,
            config=bio.Config(
                bioimageio=bio.BioimageioConfig(
                    architecture_type=config["arch"],
                    modality="electron microscopy",
                    task="segmentation" if task == "segment" else "denoising",
                    model_parameter_count=sum(p.numel() for p in wrapper.parameters()),
                ),
                **{CONFIG_KEY: native},
            ),
        )
        output_path.parent.mkdir(parents=True, exist_ok=True)
        return Path(save_bioimageio_package(descr, output_path=output_path))


# --------------------------------------------------------------------------- validate


def validate_bioimageio(path: str | Path) -> tuple[bool, str]:
    """Run bioimageio.core's model test on a package -> (passed, the summary as Markdown).

    The test loads the package, checks its format and files, and reproduces the test
    output from the test input with every weight format (and runs other input sizes).
    """
    _require_bioimageio()
    from bioimageio.core import test_model

    summary = test_model(str(path))
    return summary.status == "passed", summary.format()


# --------------------------------------------------------------------------- import


def _yaml12_load(text: bytes | str) -> Any:
    """Parse YAML with the YAML 1.2 core schema that bioimage.io rdf files are written in.

    PyYAML implements YAML 1.1, which would read ``1e-05`` as a string, ``yes``/``off``
    as booleans, ``1:20`` as 80 and ``010`` as 8: metadata would not come back as it was
    written. Plain scalars are resolved here as YAML 1.2 does; the rest is PyYAML's safe
    loader (no Python objects).
    """
    import yaml
    from yaml.composer import ComposerError

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            # an rdf needs no aliases, and nested ones ("billion laughs") hang whatever
            # walks the result: refuse them
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise ComposerError(
                    None, None, "YAML aliases (*name) are not accepted", event.start_mark
                )
            return super().compose_node(parent, index)

    Loader.yaml_implicit_resolvers = {
        ch: [(tag, rx) for tag, rx in rs if not tag.endswith((":bool", ":int", ":float"))]
        for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    core = {
        "bool": (r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
        "int": (r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
        "float": (
            r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
            "-+0123456789.",
        ),
    }
    for name, (rx, first) in core.items():
        Loader.add_implicit_resolver(f"tag:yaml.org,2002:{name}", re.compile(rx), list(first))

    def to_int(loader: Any, node: Any) -> int:
        v = loader.construct_scalar(node)
        return int(v[2:], 8) if v.startswith("0o") else int(v, 16) if v.startswith("0x") else int(v)

    def to_float(loader: Any, node: Any) -> float:
        v = loader.construct_scalar(node).lower()
        if v.endswith(".inf"):
            return -math.inf if v.startswith("-") else math.inf
        return math.nan if v == ".nan" else float(v)

    Loader.add_constructor(
        "tag:yaml.org,2002:bool", lambda ld, n: ld.construct_scalar(n).lower() == "true"
    )
    Loader.add_constructor("tag:yaml.org,2002:int", to_int)
    Loader.add_constructor("tag:yaml.org,2002:float", to_float)
    return yaml.load(text, Loader=Loader)  # a SafeLoader: builds no Python objects


def _capped(name: str, size: int, cap: int, label: str) -> None:
    """Refuse a member whose (declared or real) size is beyond what a package of ours holds."""
    if size > cap:
        raise BioimageioError(
            f"{label}: {name} is {size / 2**20:.0f} MiB, more than the {cap / 2**20:.0f} MiB "
            "a napari-temseg package holds; not read"
        )


def _read_package(source: str | Path) -> tuple[dict[str, Any], Any]:
    """-> (rdf content, ``read(relative_name) -> bytes``) of a zip, folder or rdf file.

    Reads are capped (``MAX_RDF_BYTES`` for the rdf, ``MAX_MEMBER_BYTES`` otherwise): a
    zip's declared sizes are checked before anything is inflated, and inflating stops at
    the cap whatever the zip declares.
    """
    import yaml

    source = Path(source).expanduser()
    rdf_names = ("rdf.yaml", "bioimageio.yaml")
    if source.is_file() and zipfile.is_zipfile(source):

        def read(name: str, cap: int = MAX_MEMBER_BYTES) -> bytes:
            try:
                with zipfile.ZipFile(source) as zf:
                    _capped(name, zf.getinfo(name).file_size, cap, source.name)
                    with zf.open(name) as fh:
                        data = fh.read(cap + 1)
                _capped(name, len(data), cap, source.name)
                return data
            except KeyError as exc:
                raise BioimageioError(f"{source.name}: the package lacks {name}") from exc
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise BioimageioError(f"{source.name}: damaged zip ({exc})") from exc

        try:
            with zipfile.ZipFile(source) as zf:
                names = set(zf.namelist())
        except zipfile.BadZipFile as exc:
            raise BioimageioError(f"{source.name}: damaged zip ({exc})") from exc
        rdf = next((n for n in rdf_names if n in names), None)
        rdf = rdf or next((n for n in sorted(names) if n.endswith(".bioimageio.yaml")), None)
        if rdf is None:
            raise BioimageioError(
                f"{source.name}: a zip without rdf.yaml is no bioimage.io package"
            )
        text = read(rdf, MAX_RDF_BYTES)
    else:
        if source.is_dir():
            root = source
            rdf_path = next((root / n for n in rdf_names if (root / n).is_file()), None)
            rdf_path = rdf_path or next(iter(sorted(root.glob("*.bioimageio.yaml"))), None)
            if rdf_path is None:
                raise BioimageioError(
                    f"{source}: a folder without rdf.yaml is no bioimage.io package"
                )
        elif source.is_file() and source.suffix in (".yaml", ".yml"):
            root, rdf_path = source.parent, source
        elif not source.exists():
            raise BioimageioError(f"bioimage.io package not found: {source}")
        else:
            raise BioimageioError(
                f"{source.name} is not a bioimage.io package (a .zip, a folder or an rdf.yaml)"
            )

        def read(name: str, cap: int = MAX_MEMBER_BYTES) -> bytes:
            path = (root / name).resolve()
            if root.resolve() not in path.parents or not path.is_file():
                raise BioimageioError(f"{rdf_path.name}: the package lacks {name}")
            _capped(name, path.stat().st_size, cap, rdf_path.name)
            return path.read_bytes()

        text = read(rdf_path.name, MAX_RDF_BYTES)
    try:
        content = _yaml12_load(text)
    except yaml.YAMLError as exc:
        raise BioimageioError(f"{source.name}: unreadable rdf.yaml ({exc})") from exc
    if not isinstance(content, dict):
        raise BioimageioError(f"{source.name}: rdf.yaml does not describe a resource")
    return content, read


def import_bioimageio(
    source: str | Path, output_path: str | Path | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Restore the native model of a package written by :func:`export_bioimageio`.

    ``source``: the zip, an unpacked folder or its rdf.yaml. Returns ``(model, meta)`` like
    :func:`~napari_temseg.models.load_model` (eval mode, CPU; ``meta["config"]`` is the
    architecture); with ``output_path`` also writes it as a napari-temseg checkpoint.

    Only packages carrying ``config["napari-temseg"]`` are accepted: their weights are
    read as plain tensors into our own architecture. Any other bioimage.io model raises
    :class:`BioimageioError` (a ValueError): running it would mean importing its code.
    """
    if output_path is not None:  # before anything is read: say so now, not at the end
        from napari_temseg.io.outputs import check_output_file

        check_output_file(output_path, overwrite=True)
    content, read = _read_package(source)
    label = Path(source).name
    native = (
        (content.get("config") or {}).get(CONFIG_KEY)
        if isinstance(content.get("config"), dict)
        else None
    )
    if (
        content.get("type") != "model"
        or not isinstance(native, dict)
        or native.get("format") != EXPORT_FORMAT
    ):
        raise BioimageioError(
            f"{label} is not a napari-temseg model package: import supports only packages "
            "written by `temseg export-bioimageio` (they carry config['napari-temseg'] and "
            "plain state-dict weights). Other bioimage.io models would need their own code "
            "to run; use bioimageio.core or deepImageJ for them."
        )
    version = native.get("format_version")
    if not isinstance(version, int) or version > EXPORT_FORMAT_VERSION:
        raise BioimageioError(
            f"{label}: package format {version!r} is not one this napari-temseg reads "
            f"(up to {EXPORT_FORMAT_VERSION}); a newer napari-temseg may import it"
        )
    config, meta = native.get("architecture"), native.get("meta")
    if not isinstance(config, dict) or not isinstance(meta, dict):
        raise BioimageioError(f"{label}: config['napari-temseg'] lacks the architecture or meta")
    try:
        check_header(config, meta)
    except ValueError as exc:
        raise BioimageioError(f"{label}: {exc}") from exc
    if config.get("arch") not in CITATIONS or meta.get("task") not in ("denoise", "segment"):
        raise BioimageioError(
            f"{label}: holds a {config.get('arch')!r} network for task {meta.get('task')!r}; "
            f"only {'/'.join(CITATIONS)} denoisers and segmenters are imported"
        )
    entry = (content.get("weights") or {}).get("pytorch_state_dict") or {}
    weights_name = entry.get("source") if isinstance(entry, dict) else None
    if not isinstance(weights_name, str) or "://" in weights_name:
        raise BioimageioError(f"{label}: no packaged pytorch_state_dict weights")
    data = read(weights_name)
    expected = entry.get("sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise BioimageioError(f"{label}: {weights_name} does not match its sha256 (damaged)")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses anything but tensors and containers
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise BioimageioError(
            f"{label}: {weights_name} is not a plain-tensor state dict ({type(exc).__name__}: {first})"
        ) from exc
    prefix = str(native.get("state_dict_prefix", PREFIX))
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and key.startswith(prefix) and isinstance(v, torch.Tensor)
        for key, v in state.items()
    ):
        raise BioimageioError(f"{label}: {weights_name} is not a napari-temseg state dict")
    try:
        model = build_trusted(config, {key[len(prefix) :]: v for key, v in state.items()})
    except ValueError as exc:
        raise BioimageioError(f"{label}: {exc}") from exc
    model.eval()
    meta = {k: v for k, v in meta.items() if k != "config"}
    if output_path is not None:
        save_checkpoint(output_path, model, meta)
    return model, {**meta, "config": dict(model.config)}
