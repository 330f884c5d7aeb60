"""TIFF variants found in the wild, written at test time (never copied into the repository).

Most are written with tifffile, whose files always carry every baseline tag. Real files do
not: ImageJ 1.53 leaves out the Compression tag of uncompressed images (so tifffile reports
``compression`` as the plain int 1, not an enum) and stores slice labels in its private
IJMetadata tags. ``imagej153`` writes such a file byte by byte, as ImageJ's TiffEncoder does;
Pillow writes the "RGB mask from another lab" kind. Each entry says what a reader must find.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

# TIFF field types: 2 ASCII, 3 SHORT, 4 LONG, 5 RATIONAL, 1 BYTE, 12 DOUBLE
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 12: 8}
_TYPE_FMT = {1: "B", 3: "H", 4: "I", 12: "d"}


def _pack_value(kind: int, value, bo: str) -> bytes:
    if kind == 2:
        return value.encode("latin-1") + b"\x00"
    if kind == 5:
        return b"".join(struct.pack(f"{bo}II", n, d) for n, d in value)
    if kind == 1 and isinstance(value, bytes):
        return value
    values = value if isinstance(value, (list, tuple)) else [value]
    return struct.pack(f"{bo}{len(values)}{_TYPE_FMT[kind]}", *values)


def _ifd_count(kind: int, payload: bytes) -> int:
    return len(payload) // _TYPE_SIZE[kind]


def write_raw_tiff(
    path: Path, pages: list[np.ndarray], tags: list[dict[int, tuple]], bo: str = ">"
) -> None:
    """A classic TIFF (``bo`` '>' big-endian as ImageJ writes, '<' little) with exactly the
    tags given, one strip per page.

    ``tags[i]`` maps tag code -> (type, value) for page i; strip offsets/counts are added.
    """
    out = bytearray((b"MM\x00*" if bo == ">" else b"II*\x00") + b"\x00\x00\x00\x00")
    strips = []  # all pixels first, contiguous, then the IFDs: ImageJ's layout
    for page in pages:
        data = np.ascontiguousarray(page).astype(page.dtype.newbyteorder(bo)).tobytes()
        strips.append((len(out), len(data)))
        out += data
    if len(out) % 2:
        out += b"\x00"
    ifd_offsets = []
    for (strip_offset, strip_bytes), page_tags in zip(strips, tags, strict=True):
        entries = dict(page_tags)
        entries[273] = (4, strip_offset)
        entries[279] = (4, strip_bytes)
        extra = bytearray()
        ifd_offset = len(out)
        n = len(entries)
        extra_start = ifd_offset + 2 + 12 * n + 4
        body = bytearray(struct.pack(f"{bo}H", n))
        for code in sorted(entries):
            kind, value = entries[code]
            payload = _pack_value(kind, value, bo)
            count = _ifd_count(kind, payload)
            if len(payload) <= 4:
                body += struct.pack(f"{bo}HHI", code, kind, count) + payload.ljust(4, b"\x00")
            else:
                body += struct.pack(f"{bo}HHII", code, kind, count, extra_start + len(extra))
                extra += payload
                if len(extra) % 2:
                    extra += b"\x00"
        body += b"\x00\x00\x00\x00"  # next IFD, patched below
        ifd_offsets.append(ifd_offset)
        out += body + extra
    for a, b in itertools.pairwise(ifd_offsets):
        n = struct.unpack_from(f"{bo}H", out, a)[0]
        struct.pack_into(f"{bo}I", out, a + 2 + 12 * n, b)
    struct.pack_into(f"{bo}I", out, 4, ifd_offsets[0])
    Path(path).write_bytes(bytes(out))


def imagej153(path: Path, stack: np.ndarray, labels: list[str], pixel_um: float) -> None:
    """An uncompressed ImageJ 1.53 stack with slice Labels, as ImageJ writes it.

    No Compression tag (ImageJ omits it when uncompressed), ResolutionUnit 'none' with the
    unit in the description, and the labels in IJMetadataByteCounts/IJMetadata (50838/50839).
    """
    n, h, w = stack.shape
    bits = stack.dtype.itemsize * 8
    description = (
        f"ImageJ=1.53t\nimages={n}\nslices={n}\nunit=micron\nspacing={pixel_um}\nloop=false\n"
    )
    header = b"IJIJ" + b"labl" + struct.pack(">I", len(labels))
    chunks = [header] + [lab.encode("utf-16-be") for lab in labels]
    counts = [len(c) for c in chunks]
    per_unit = round(1.0 / pixel_um * 1_000_000)
    common = {
        254: (4, 0),  # NewSubfileType
        256: (4, w),
        257: (4, h),
        258: (3, bits),
        262: (3, 1),  # BlackIsZero
        277: (3, 1),
        278: (3, h),
        282: (5, [(per_unit, 1_000_000)]),
        283: (5, [(per_unit, 1_000_000)]),
        296: (3, 1),  # ResolutionUnit: none
    }
    first = {
        **common,
        270: (2, description),
        50838: (4, counts),
        50839: (1, b"".join(chunks)),
    }
    tags = [first] + [common] * (n - 1)
    write_raw_tiff(path, list(stack), tags)


@dataclass
class Variant:
    """One corpus file: how to write it and what every reader must find in it."""

    write: Callable[[Path], None]
    shape: tuple[int, ...]  # what io.read returns
    pixel_size_nm: float | None
    rgb: bool = False


def _rng_image(shape: tuple[int, ...], dtype) -> np.ndarray:
    rng = np.random.default_rng(sum(shape))
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.normal(100, 10, shape).astype(dtype)
    hi = min(np.iinfo(dtype).max, 4000)
    return rng.integers(0, hi, shape).astype(dtype)


def _tw(data: np.ndarray, **kw) -> Callable[[Path], None]:
    return lambda p: tifffile.imwrite(p, data, **kw)


def _pil(data: np.ndarray, mode: str | None = None) -> Callable[[Path], None]:
    def write(p: Path) -> None:
        from PIL import Image

        Image.fromarray(data, mode=mode).save(p) if mode else Image.fromarray(data).save(p)

    return write


def _multipage(pages: np.ndarray) -> Callable[[Path], None]:
    def write(p: Path) -> None:
        with tifffile.TiffWriter(p) as tw:
            for page in pages:
                tw.write(page, contiguous=False, metadata=None)

    return write


FEI_TEXT = (
    "[User]\nDate=12/01/2023\nTime=10:11:12 AM\n[System]\nSystemType=Talos F200X\n"
    "[Beam]\nHV=200000\n[Scan]\nPixelWidth=2.5e-10\nPixelHeight=2.5e-10\nDwelltime=1e-06\n"
)


def variants() -> dict[str, Variant]:
    """Every corpus file by name."""
    u8 = _rng_image((3, 32, 40), np.uint8)
    u16 = _rng_image((5, 32, 40), np.uint16)
    f32 = _rng_image((32, 40), np.float32)
    rgb = _rng_image((32, 40, 3), np.uint8)
    rgba = _rng_image((32, 40, 4), np.uint8)
    res = {"resolution": (4.0, 4.0)}  # 4 px per µm -> 250 nm
    out = {
        "imagej153_labels_8bit": Variant(
            lambda p: imagej153(p, u8, ["a", "b", "c"], 0.25), (3, 32, 40), 250.0
        ),
        "imagej153_single_8bit": Variant(
            lambda p: imagej153(p, u8[:1], ["only"], 0.25), (32, 40), 250.0
        ),
        "imagej_hyperstack_labels": Variant(
            _tw(
                u16,
                imagej=True,
                metadata={"axes": "TYX", "unit": "um", "Labels": list("abcde")},
                **res,
            ),
            (5, 32, 40),
            250.0,
        ),
        "imagej_hyperstack_tzyx": Variant(
            _tw(u16[:4].reshape(2, 2, 32, 40), imagej=True, metadata={"axes": "TZYX"}),
            (2, 2, 32, 40),
            None,
        ),
        "fiji_uncompressed_float": Variant(
            _tw(f32, imagej=True, metadata={"unit": "nm"}, resolution=(2.0, 2.0)), (32, 40), 0.5
        ),
        "ome_zlib": Variant(
            _tw(
                u16,
                ome=True,
                compression="zlib",
                metadata={
                    "axes": "ZYX",
                    "PhysicalSizeX": 0.5,
                    "PhysicalSizeXUnit": "nm",
                    "PhysicalSizeY": 0.5,
                    "PhysicalSizeYUnit": "nm",
                },
            ),
            (5, 32, 40),
            0.5,
        ),
        "bigtiff": Variant(_tw(u16, bigtiff=True), (5, 32, 40), None),
        "tiled": Variant(_tw(_rng_image((64, 80), np.uint16), tile=(32, 32)), (64, 80), None),
        "lzw": Variant(_tw(u16, compression="lzw"), (5, 32, 40), None),
        "deflate": Variant(_tw(u16, compression="deflate"), (5, 32, 40), None),
        "zstd": Variant(_tw(u16, compression="zstd"), (5, 32, 40), None),
        "multipage_pages": Variant(_multipage(u16), (5, 32, 40), None),
        "planar_rgba": Variant(
            _tw(u16[:4], photometric="rgb", planarconfig="separate"), (32, 40, 4), None, rgb=True
        ),
        "rgb_tifffile": Variant(_tw(rgb, photometric="rgb"), (32, 40, 3), None, rgb=True),
        "rgba_tifffile": Variant(
            _tw(rgba, photometric="rgb", extrasamples=["unassalpha"]), (32, 40, 4), None, True
        ),
        "rgb_mask_pillow": Variant(_pil(rgb), (32, 40, 3), None, rgb=True),
        "grey_pillow_L": Variant(_pil(u8[0]), (32, 40), None),
        "grey_pillow_I16": Variant(_pil(u16[0]), (32, 40), None),
        "float_pillow_F": Variant(_pil(f32), (32, 40), None),
        "fei_velox_like": Variant(
            _tw(u16[0], extratags=[(34682, "s", 0, FEI_TEXT, True)]), (32, 40), 0.25
        ),
        "dm_export_like": Variant(
            _tw(
                u16[0],
                extratags=[
                    (65003, "s", 0, "nm", True),
                    (65006, "d", 1, 0.1, True),
                    (65009, "d", 1, 0.1, True),
                    (65027, "B", 8, b"\x01\x02\x03\x04\x05\x06\x07\x08", True),
                ],
            ),
            (32, 40),
            None,
        ),
        "imagej_bad_unit_and_spacing": Variant(
            _tw(
                u16,
                imagej=True,
                metadata={"axes": "ZYX", "unit": "furlong", "spacing": "abc"},
                resolution=(4.0, 4.0),
            ),
            (5, 32, 40),
            None,
        ),
        "fei_garbled": Variant(
            _tw(u16[0], extratags=[(34682, "s", 0, "[Scan]\nPixelWidth=abc\n[[[\n", True)]),
            (32, 40),
            None,
        ),
        "ome_garbled_xml": Variant(
            _tw(u16[0], description='<?xml version="1.0"?><OME><Image><Pixels PhysicalSizeX='),
            (32, 40),
            None,
        ),
        "temseg_json_wrong": Variant(
            _tw(u16[0], imagej=True, metadata={"Info": '{"napari-temseg": {"axes": 5}}'}),
            (32, 40),
            None,
        ),
    }
    for dtype in ("uint8", "int8", "int16", "uint32", "int32", "float32", "float64"):
        out[f"dtype_{dtype}"] = Variant(_tw(_rng_image((32, 40), dtype)), (32, 40), None)
    return out
