#!/usr/bin/python3
"""Writes the image folder fixture of tests/unit/test_data_images.c into tests/data/data/images/:
a Keras image_dataset_from_directory layout (root/<class>/<file>) of small PNG and JPEG files made
with PIL, files of other types that are not records, and expected.json listing the records in
Keras' order (classes sorted, files sorted within each class) with their labels and sizes.

    /usr/bin/python3 tests/data/make_data_fixtures_images.py
"""
import json
import os
import shutil

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data", "images")
ROOT = os.path.join(OUT, "flowers")


def image(size, colour, mode="RGB"):
    im = Image.new(mode, size, colour)
    for x in range(size[0]):  # a diagonal, so that encoders have something to encode
        im.putpixel((x, x % size[1]), 0 if mode == "L" else (0, 0, 0))
    return im


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    for c in ("tulips", "roses"):
        os.makedirs(os.path.join(ROOT, c))
    image((5, 4), (200, 10, 10)).save(os.path.join(ROOT, "roses", "b.png"))
    image((6, 3), (220, 40, 60)).save(os.path.join(ROOT, "roses", "a.jpg"), quality=90)
    image((4, 4), 128, "L").save(os.path.join(ROOT, "roses", "C.PNG"))
    image((3, 7), (250, 250, 0)).save(os.path.join(ROOT, "tulips", "x.jpeg"), quality=90)
    with open(os.path.join(ROOT, "tulips", "notes.txt"), "w") as f:
        f.write("not an image\n")
    with open(os.path.join(ROOT, "README"), "w") as f:
        f.write("a file at the root is not a class\n")

    classes = sorted(d for d in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, d)))
    records = []
    for label, c in enumerate(classes):
        for name in sorted(os.listdir(os.path.join(ROOT, c))):
            if os.path.splitext(name)[1].lower() in (".jpg", ".jpeg", ".png"):
                path = os.path.join(ROOT, c, name)
                records.append({"path": c + "/" + name, "label": label, "bytes": os.path.getsize(path)})
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"classes": classes, "records": records, "others": 2}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
