#!/usr/bin/python3
"""Fixtures for tests/unit/test_data_transform.c and test_data_image.c.

Writes into tests/data/data/: inputs and expected outputs of the per-record transforms (.npy,
computed with numpy and torch.nn.functional.interpolate), a schema file for normalize, PNG and
JPEG images made with PIL with the pixels PIL decodes from them, malformed images, and two JSON
files (xf_expected.json, image_expected.json) that list the cases. The images are also the seeds
of the fuzz_image target (tests/fuzz/corpus/image/seed-*), with a few more JPEG and PNG kinds. Run with Debian's python3:
    /usr/bin/python3 tests/data/make_data_fixtures_transform.py
"""
import io
import json
import os
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
rng = np.random.default_rng(20240611)


def save(name, array):
    np.save(os.path.join(OUT, name), array)
    return name


def torch_resize(x, size, mode):
    """x: [H, W] or [H, W, C] numpy -> same layout, via NCHW float64 interpolate (reference)."""
    t = torch.from_numpy(np.asarray(x, dtype=np.float32))
    hwc = t.dim() == 3
    t = t.permute(2, 0, 1)[None] if hwc else t[None, None]
    if mode == "bilinear":
        y = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    else:
        y = F.interpolate(t, size=size, mode="nearest-exact")
    y = y[0].permute(1, 2, 0) if hwc else y[0, 0]
    return y.numpy()


def transforms():
    cases = {}
    gray = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
    rgb = rng.integers(0, 256, size=(17, 23, 3), dtype=np.uint8)
    small = rng.normal(size=(5, 7, 2)).astype(np.float32)
    ints = rng.integers(-300, 300, size=(6, 5)).astype(np.int16)
    save("xf_gray28.npy", gray)
    save("xf_rgb17x23.npy", rgb)
    save("xf_small5x7x2.npy", small)
    save("xf_int6x5.npy", ints)
    resize = []
    for inp, arr, size, method, dtype in [
        ("xf_gray28.npy", gray, [224, 224], "bilinear", np.float32),
        ("xf_gray28.npy", gray, [224, 224], "nearest", np.uint8),
        ("xf_gray28.npy", gray, [10, 6], "bilinear", np.float32),
        ("xf_rgb17x23.npy", rgb, [8, 10], "bilinear", np.float32),
        ("xf_rgb17x23.npy", rgb, [8, 10], "nearest", np.uint8),
        ("xf_rgb17x23.npy", rgb, [40, 31], "nearest", np.uint8),
        ("xf_small5x7x2.npy", small, [13, 9], "bilinear", np.float32),
        ("xf_small5x7x2.npy", small, [3, 11], "nearest", np.float32),
        ("xf_int6x5.npy", ints, [4, 9], "nearest", np.int16),
    ]:
        want = torch_resize(arr, size, method).astype(dtype)
        name = "xf_resize_%s_%dx%d_%s.npy" % (inp[3:-4], size[0], size[1], method)
        resize.append({"input": inp, "size": size, "method": method, "expected": save(name, want)})
    cases["resize"] = resize

    crop = []
    for spec, (y, x) in [({"size": [10, 12], "offset": [2, 3]}, (2, 3)),
                         ({"size": [10, 12], "center": True}, ((17 - 10) // 2, (23 - 12) // 2)),
                         ({"size": [17, 23], "offset": [0, 0]}, (0, 0))]:
        h, w = spec["size"]
        name = "xf_crop_%dx%d_at_%d_%d.npy" % (h, w, y, x)
        crop.append({"input": "xf_rgb17x23.npy", "spec": spec, "expected": save(name, rgb[y:y + h, x:x + w])})
    cases["crop"] = crop

    factor, offset = 1 / 127.5, -1.0
    cases["scale"] = {"input": "xf_rgb17x23.npy", "factor": factor, "offset": offset,
                      "expected": save("xf_scale_rgb.npy", (rgb.astype(np.float64) * factor + offset).astype(np.float32))}
    mean = [0.485 * 255, 0.456 * 255, 0.406 * 255]
    std = [0.229 * 255, 0.224 * 255, 0.225 * 255]
    norm = ((rgb.astype(np.float64) - np.array(mean)) / np.array(std)).astype(np.float32)
    cases["normalize"] = {"input": "xf_rgb17x23.npy", "mean": mean, "std": std,
                          "expected": save("xf_normalize_rgb.npy", norm)}

    # normalize from a schema (the pinned kiln_schema 1 format)
    x = rng.normal(3.0, 2.5, size=(6,)).astype(np.float32)
    schema = {"kiln_schema": 1, "num_records": 6, "features": [
        {"name": "name", "dtype": "string", "shape": None, "missing_rate": 0, "max_missing_rate": 0,
         "domain": ["a", "b"]},
        {"name": "x", "dtype": "float", "shape": [6], "missing_rate": 0, "max_missing_rate": 0.1,
         "min": float(x.min()), "max": float(x.max()),
         "stats": {"mean": float(x.astype(np.float64).mean()), "std": float(x.astype(np.float64).std()),
                   "min": float(x.min()), "max": float(x.max()),
                   "histogram": {"edges": [float(x.min()), float(x.max())], "counts": [6]}}},
        {"name": "flat", "dtype": "float", "shape": None, "missing_rate": 0, "max_missing_rate": 0,
         "stats": {"mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0,
                   "histogram": {"edges": [1.0, 1.0], "counts": [6]}}},
    ]}
    with open(os.path.join(OUT, "xf_schema.json"), "w") as f:
        json.dump(schema, f, indent=1)
    st = schema["features"][1]["stats"]
    cases["normalize_schema"] = {
        "schema": "xf_schema.json", "input": save("xf_schema_x.npy", x),
        "expected": save("xf_normalize_schema_x.npy", ((x.astype(np.float64) - st["mean"]) / st["std"]).astype(np.float32))}

    labels = np.array([3, 0, 9, 1, 7], dtype=np.int64)
    cases["one_hot"] = {"input": save("xf_labels.npy", labels), "depth": 10,
                        "expected": save("xf_one_hot_labels.npy", np.eye(10, dtype=np.float32)[labels])}

    floats = np.array([-2.7, -0.5, 0.0, 0.5, 1.9, 100.2, 255.9, -128.9], dtype=np.float32)
    wide = np.array([-1, 256, 300, 5, -129, 70000], dtype=np.int64)
    cases["cast"] = [
        {"input": save("xf_cast_floats.npy", floats), "dtype": "int32",
         "expected": save("xf_cast_floats_int32.npy", floats.astype(np.int32))},
        {"input": save("xf_cast_floats_small.npy", floats[floats < 128]), "dtype": "int8",
         "expected": save("xf_cast_floats_int8.npy", floats[floats < 128].astype(np.int8))},
        {"input": "xf_cast_floats.npy", "dtype": "bool",
         "expected": save("xf_cast_floats_bool.npy", floats.astype(np.bool_))},
        {"input": save("xf_cast_wide.npy", wide), "dtype": "uint8",
         "expected": save("xf_cast_wide_uint8.npy", wide.astype(np.uint8))},
        {"input": "xf_cast_wide.npy", "dtype": "int16",
         "expected": save("xf_cast_wide_int16.npy", wide.astype(np.int16))},
        {"input": "xf_cast_wide.npy", "dtype": "float",
         "expected": save("xf_cast_wide_float.npy", wide.astype(np.float32))},
        {"input": "xf_cast_wide.npy", "dtype": "double",
         "expected": save("xf_cast_wide_double.npy", wide.astype(np.float64))},
    ]
    with open(os.path.join(OUT, "xf_expected.json"), "w") as f:
        json.dump(cases, f, indent=1)


def picture(h, w):
    """A smooth image with some noise: a realistic JPEG input."""
    y, x = np.mgrid[0:h, 0:w]
    r = 128 + 100 * np.sin(x / 5.0) * np.cos(y / 7.0)
    g = 255.0 * x / max(w - 1, 1)
    b = 255.0 * y / max(h - 1, 1)
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, 8, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def png_bytes(img, **kw):
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def images():
    cases = []

    def write(name, data):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        return name

    def expect(file, channels, pixels, exact=True):
        pixels = np.asarray(pixels, dtype=np.uint8)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        name = "%s_c%d.npy" % (file.replace(".", "_"), channels)
        cases.append({"file": file, "channels": channels, "expected": save(name, pixels), "exact": exact})

    rgb = Image.fromarray(picture(12, 16), "RGB")
    gray = rgb.convert("L").crop((0, 0, 13, 11))
    write("img_gray.png", png_bytes(gray))
    expect("img_gray.png", 0, np.asarray(gray))
    expect("img_gray.png", 1, np.asarray(gray))
    expect("img_gray.png", 3, np.asarray(gray.convert("RGB")))

    write("img_rgb.png", png_bytes(rgb))
    expect("img_rgb.png", 0, np.asarray(rgb))
    expect("img_rgb.png", 3, np.asarray(rgb))
    expect("img_rgb.png", 1, np.asarray(rgb.convert("L")))

    pal = rgb.convert("P", palette=Image.ADAPTIVE, colors=16)
    write("img_palette.png", png_bytes(pal))
    expect("img_palette.png", 0, np.asarray(pal.convert("RGB")))
    expect("img_palette.png", 1, np.asarray(pal.convert("RGB").convert("L")))

    alpha = Image.fromarray(rng.integers(0, 256, size=(12, 16), dtype=np.uint8), "L")
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    write("img_rgba.png", png_bytes(rgba))
    expect("img_rgba.png", 0, np.asarray(rgba))
    expect("img_rgba.png", 3, np.asarray(rgba.convert("RGB")))
    expect("img_rgba.png", 1, np.asarray(rgba.convert("L")))

    la = Image.merge("LA", [rgb.convert("L"), alpha])
    write("img_la.png", png_bytes(la))
    expect("img_la.png", 0, np.asarray(la.convert("RGBA")))
    expect("img_la.png", 1, np.asarray(la.convert("L")))
    expect("img_la.png", 3, np.asarray(la.convert("RGB")))

    # a palette with a transparent entry (tRNS): alpha comes from it
    write("img_palette_trns.png", png_bytes(pal, transparency=0))
    pal_trns = Image.open(os.path.join(OUT, "img_palette_trns.png"))
    expect("img_palette_trns.png", 0, np.asarray(pal_trns.convert("RGBA")))
    expect("img_palette_trns.png", 3, np.asarray(pal_trns.convert("RGB")))

    # 16-bit gray: decoders scale to 8 bits by keeping the high byte
    deep = (np.arange(9 * 7, dtype=np.uint32).reshape(9, 7) * 1031 % 65536).astype(np.uint16)
    write("img_gray16.png", png_bytes(Image.fromarray(deep, "I;16")))
    expect("img_gray16.png", 0, deep >> 8)

    buf = io.BytesIO()
    rgb32 = Image.fromarray(picture(24, 32), "RGB")
    rgb32.save(buf, format="JPEG", quality=90)
    write("img_rgb.jpg", buf.getvalue())
    decoded = Image.open(io.BytesIO(buf.getvalue()))
    expect("img_rgb.jpg", 0, np.asarray(decoded.convert("RGB")), exact=False)
    expect("img_rgb.jpg", 1, np.asarray(decoded.convert("L")), exact=False)

    buf = io.BytesIO()
    rgb32.convert("L").save(buf, format="JPEG", quality=85)
    write("img_gray.jpg", buf.getvalue())
    decoded = Image.open(io.BytesIO(buf.getvalue()))
    expect("img_gray.jpg", 0, np.asarray(decoded), exact=False)
    expect("img_gray.jpg", 3, np.asarray(decoded.convert("RGB")), exact=False)

    # malformed: truncated files, a PNG whose IDAT CRC is wrong, bytes that are no image
    png = png_bytes(rgb)
    jpg = open(os.path.join(OUT, "img_rgb.jpg"), "rb").read()
    bad = []
    bad.append({"file": write("img_truncated.png", png[: len(png) // 2]), "error": "corrupt PNG"})
    bad.append({"file": write("img_truncated.jpg", jpg[: len(jpg) // 2]), "error": "corrupt JPEG"})
    at = png.index(b"IDAT")
    length = int.from_bytes(png[at - 4:at], "big")
    crc_at = at + 4 + length
    assert zlib.crc32(png[at:crc_at]) == int.from_bytes(png[crc_at:crc_at + 4], "big")
    flipped = bytearray(png)
    flipped[crc_at] ^= 0xFF
    bad.append({"file": write("img_badcrc.png", bytes(flipped)), "error": "corrupt PNG"})
    bad.append({"file": write("img_notimage.bin", b"GIF89a not supported"), "error": "not a JPEG or PNG"})
    # a header claiming 100000 x 100000 pixels must be refused before anything is allocated
    ihdr = b"IHDR" + (100000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    huge = png[:8] + (13).to_bytes(4, "big") + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + png[33:]
    bad.append({"file": write("img_huge.png", huge), "error": "larger than the limit"})
    with open(os.path.join(OUT, "image_expected.json"), "w") as f:
        json.dump({"decode": cases, "malformed": bad}, f, indent=1)


def fuzz_seeds():
    corpus = os.path.join(os.path.dirname(OUT), "..", "fuzz", "corpus", "image")
    os.makedirs(corpus, exist_ok=True)
    for name in sorted(os.listdir(OUT)):
        if name.startswith("img_") and not name.endswith(".npy"):
            with open(os.path.join(OUT, name), "rb") as f:
                data = f.read()
            with open(os.path.join(corpus, "seed-" + name.replace(".", "-")), "wb") as f:
                f.write(data)
    img = Image.fromarray(rng.integers(0, 256, (9, 10, 3), dtype=np.uint8), "RGB")
    for name, mode, kw in [("bilevel-png", "1", {"format": "PNG"}),
                           ("progressive-jpg", "RGB", {"format": "JPEG", "progressive": True, "quality": 75}),
                           ("420-jpg", "RGB", {"format": "JPEG", "subsampling": 2, "quality": 50}),
                           ("cmyk-jpg", "CMYK", {"format": "JPEG"})]:
        buf = io.BytesIO()
        img.convert(mode).save(buf, **kw)
        with open(os.path.join(corpus, "seed-" + name), "wb") as f:
            f.write(buf.getvalue())


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    transforms()
    images()
    fuzz_seeds()
