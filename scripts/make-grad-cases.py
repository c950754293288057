#!/usr/bin/env python3
"""Writes tests/data/grad/: every case of tests/data/validation and tests/data/cases with an
extra tensor `d_out` (the upstream gradient, F32, the shape of q), for
`wgattn run --grad --check`. Standard library only; deterministic (seeded per file name).

    scripts/make-grad-cases.py             # tests/data/grad/
    scripts/make-grad-cases.py IN OUT      # one file: IN plus a d_out, written to OUT
"""
import glob
import json
import os
import random
import struct
import sys
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")


def read(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    meta = header.pop("__metadata__", None)
    tensors = {
        name: (t["dtype"], t["shape"], body[t["data_offsets"][0] : t["data_offsets"][1]])
        for name, t in header.items()
    }
    return meta, tensors


def write(path, meta, tensors):
    header, blobs, offset = {}, [], 0
    if meta is not None:
        header["__metadata__"] = meta
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def with_d_out(src, dst):
    name = os.path.basename(src)
    meta, tensors = read(src)
    shape = tensors["q"][1]
    count = 1
    for d in shape:
        count *= d
    rng = random.Random(zlib.crc32(name.encode()))
    d_out = struct.pack("<%df" % count, *(rng.gauss(0.0, 1.0) for _ in range(count)))
    tensors["d_out"] = ("F32", list(shape), d_out)
    write(dst, meta, tensors)
    return shape


def main():
    if len(sys.argv) == 3:
        print(f"{sys.argv[2]}: d_out {with_d_out(sys.argv[1], sys.argv[2])}")
        return
    out_dir = os.path.join(ROOT, "grad")
    os.makedirs(out_dir, exist_ok=True)
    sources = sorted(glob.glob(os.path.join(ROOT, "validation", "*.safetensors")))
    sources += sorted(glob.glob(os.path.join(ROOT, "cases", "*.safetensors")))
    for src in sources:
        name = os.path.basename(src)
        shape = with_d_out(src, os.path.join(out_dir, name))
        print(f"tests/data/grad/{name}: d_out {shape}")


if __name__ == "__main__":
    main()
