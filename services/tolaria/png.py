"""A PNG decoder for CIFAR-10's parquet cells: numpy and zlib only, so Tolaria needs neither PIL nor torchvision."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np


def decode_png_batch(blobs: Sequence[bytes]) -> np.ndarray:
    """Decode 8-bit non-interlaced grey/RGB/RGBA PNGs of one size into uint8 (N,H,W,3), unfiltering all at once.

    Every image's rows are unfiltered together (§2.1's 60,000 CIFAR cells in seconds without PIL); any other
    PNG flavour is a ValueError naming it.
    """
    raws, shape = [], None
    for blob in blobs:
        if blob[:8] != b"\x89PNG\r\n\x1a\n":
            raise ValueError("not a PNG image")
        pos, idat, header = 8, [], b""
        while pos < len(blob):
            (length,), kind = struct.unpack(">I", blob[pos : pos + 4]), blob[pos + 4 : pos + 8]
            data = blob[pos + 8 : pos + 8 + length]
            header = data if kind == b"IHDR" else header
            if kind == b"IDAT":
                idat.append(data)
            pos += 12 + length
        w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
        if depth != 8 or colour not in (0, 2, 6) or interlace:
            raise ValueError(f"unsupported PNG: bit depth {depth}, colour type {colour}, interlace {interlace}")
        if shape not in (None, (h, w, colour)):
            raise ValueError("PNG batch mixes image sizes or colour types")
        shape = (h, w, colour)
        raws.append(zlib.decompress(b"".join(idat)))
    if shape is None:
        return np.zeros((0, 32, 32, 3), dtype=np.uint8)
    h, w, colour = shape
    bpp = {0: 1, 2: 3, 6: 4}[colour]
    rows = np.frombuffer(b"".join(raws), dtype=np.uint8).reshape(len(raws), h, w * bpp + 1)
    # Chunks keep the int16 working set small (about 25 MB for 4096 CIFAR cells).
    pixels = np.concatenate([_unfilter(rows[i : i + 4096], bpp) for i in range(0, len(rows), 4096)])
    pixels = pixels.reshape(len(raws), h, w, bpp)
    return np.repeat(pixels, 3, axis=3) if colour == 0 else pixels[..., :3]


def _unfilter(rows: np.ndarray, bpp: int) -> np.ndarray:
    """Undo PNG's per-row filters (None, Sub, Up, Average, Paeth) for a stack of same-shaped images."""
    n, h, width = rows.shape
    stride = width - 1
    filters, data = rows[:, :, 0], rows[:, :, 1:].astype(np.int16)
    out = np.zeros((n, h, stride), dtype=np.int16)
    zeros = np.zeros((n, bpp), dtype=np.int16)
    for r in range(h):
        prev = out[:, r - 1] if r else np.zeros((n, stride), dtype=np.int16)
        cur, f = data[:, r], filters[:, r][:, None]
        row = np.where(f == 2, cur + prev, cur) & 0xFF  # None and Up need no left context
        for x in range(0, stride, bpp):
            s = slice(x, x + bpp)
            left = row[:, x - bpp : x] if x else zeros
            up_left = prev[:, x - bpp : x] if x else zeros
            up = prev[:, s]
            p = left + up - up_left
            pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - up_left)
            paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
            pred = np.select([f == 1, f == 3, f == 4], [left, (left + up) // 2, paeth], 0)
            row[:, s] = (row[:, s] + pred) & 0xFF
        out[:, r] = row
    return out.astype(np.uint8)
