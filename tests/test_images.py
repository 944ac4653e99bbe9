"""Image files: conversions with notes, clear errors, atomic PNGs with recipes, inputs protected."""

import numpy as np
import pytest
from PIL import Image

from regionedit.errors import RegionEditError
from regionedit.images import (
    check_output_path,
    load_image,
    pil_to_tensor,
    read_recipe,
    save_png,
    tensor_to_pil,
)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(RegionEditError, match="image not found"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_text("this is not a PNG")
    with pytest.raises(RegionEditError, match="cannot read image"):
        load_image(bad)
    with pytest.raises(RegionEditError, match="folder"):
        load_image(tmp_path)


@pytest.mark.parametrize(
    "mode,array,note",
    [
        ("L", np.full((5, 7), 200, np.uint8), "grayscale"),
        ("RGBA", np.dstack([np.full((5, 7, 3), 9, np.uint8), np.full((5, 7), 128, np.uint8)]), "alpha"),
        ("I;16", np.full((5, 7), 65535, np.uint16), "high-bit-depth"),
    ],
)
def test_conversions_come_with_a_note(mode, array, note, tmp_path):
    path = tmp_path / f"{mode.replace(';', '')}.png"
    Image.fromarray(array).save(path)
    loaded = load_image(path)
    assert loaded.image.mode == "RGB" and loaded.image.size == (7, 5)
    assert any(note in n for n in loaded.notes)
    pixel = loaded.image.getpixel((0, 0))
    if mode == "I;16":
        assert pixel == (255, 255, 255)
    if mode == "RGBA":  # half-transparent dark over white
        assert 125 <= pixel[0] <= 135


def test_rgb_has_no_notes(tmp_path):
    path = tmp_path / "rgb.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(path)
    assert load_image(path).notes == []


def test_tensor_round_trip():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8))
    x = pil_to_tensor(image)
    assert x.shape == (1, 3, 6, 9) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(np.asarray(tensor_to_pil(x[0])), np.asarray(image))


def test_png_recipe_and_atomic_write(tmp_path):
    recipe = {"method": "ddpm_edit", "seed": 3, "target_prompt": "a cat"}
    path = save_png(Image.new("RGB", (4, 4)), tmp_path / "sub" / "out.png", recipe)
    assert read_recipe(path) == recipe
    assert [p.name for p in path.parent.iterdir()] == ["out.png"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "out.png"
    save_png(Image.new("RGB", (4, 4), (9, 9, 9)), path)

    class Broken:
        def save(self, *args, **kwargs):
            raise OSError("disk full")

    with pytest.raises(OSError):
        save_png(Broken(), path)
    assert Image.open(path).getpixel((0, 0)) == (9, 9, 9)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_outputs_never_overwrite_inputs(tmp_path):
    source = tmp_path / "in.png"
    source.write_bytes(b"x")
    with pytest.raises(RegionEditError, match="is an input file"):
        check_output_path(tmp_path / "." / "in.png", [source])
    with pytest.raises(RegionEditError, match="is a folder"):
        check_output_path(tmp_path, [source])
    assert check_output_path(tmp_path / "out.png", [source, None]).name == "out.png"


def _png16_rgb(path, value=40000, size=(3, 2)):
    """A 16-bit-per-channel RGB PNG written by hand (Pillow cannot write one)."""
    import struct
    import zlib

    width, height = size
    rows = b"".join(b"\x00" + np.full((width, 3), value, ">u2").tobytes() for _ in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


def test_16_bit_colour_png_is_reduced_with_a_note(tmp_path):
    loaded = load_image(_png16_rgb(tmp_path / "rgb16.png"))
    assert loaded.image.getpixel((0, 0)) == (156, 156, 156)  # 40000 / 65535 · 255
    assert any("16 bits per channel" in n for n in loaded.notes)


def test_atomic_outputs_get_the_usual_file_mode(tmp_path):
    import os
    import stat

    path = save_png(Image.new("RGB", (2, 2)), tmp_path / "mode.png")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def bomb_png(path, side: int = 20000) -> None:
    """A valid PNG header claiming side×side pixels, with (almost) no data: a few bytes on disk."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_decompression_bombs_are_refused_in_one_line(tmp_path, monkeypatch):
    from regionedit.cli import main

    bomb = tmp_path / "bomb.png"
    bomb_png(bomb)
    assert bomb.stat().st_size < 200
    with pytest.raises(RegionEditError, match=r"400,000,000 pixels, above the limit of 67,108,864"):
        load_image(bomb)
    assert main(["edit", "zone", str(bomb), "make the ball red", "--model", "tiny/ip2p", "-o", str(tmp_path / "o.png")]) == 2
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30)).save(small)
    monkeypatch.setenv("REGIONEDIT_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(RegionEditError, match="40×30 = 1,200 pixels, above the limit of 1,000"):
        load_image(small)


def test_exif_orientation_is_applied_with_a_note(tmp_path):
    array = np.zeros((10, 20, 3), dtype=np.uint8)
    array[:, :5] = 255  # a white strip on the left of a 20-wide, 10-high picture
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    path = tmp_path / "phone.jpg"
    Image.fromarray(array).save(path, exif=exif, quality=95)
    loaded = load_image(path)
    assert loaded.image.size == (10, 20)  # upright: now 10 wide and 20 high
    top = np.asarray(loaded.image)[:5].mean()
    assert top > 200 and np.asarray(loaded.image)[-5:].mean() < 50  # the strip is now at the top
    assert any("EXIF orientation 6 applied" in note for note in loaded.notes)


def test_animations_give_their_first_frame_with_a_note(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    for name in ("anim.gif", "anim.png"):
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=100)
        loaded = load_image(tmp_path / name)
        red, green, blue = np.asarray(loaded.image).reshape(-1, 3).mean(0)
        assert red > 200 and green < 50 and blue < 50, name
        assert any("animation of 3 frames; its first frame is used" in note for note in loaded.notes), loaded.notes
