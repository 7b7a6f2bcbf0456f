"""Any common format and mode decodes to the right pixels, with EXIF orientation applied."""

import numpy as np
import pytest
from PIL import Image

from imgcls.data.images import decode_image, is_image_file


def _gradient(width=40, height=20):
    x = np.linspace(0, 255, width, dtype=np.float32)
    return np.tile(x, (height, 1)).astype(np.uint8)


@pytest.mark.parametrize("extension", ["png", "PNG", "jpg", "jpeg", "JPG", "bmp", "gif", "webp", "tif", "TIFF"])
def test_extensions_in_any_case_decode(tmp_path, extension):
    path = tmp_path / f"image.{extension}"
    Image.fromarray(np.stack([_gradient()] * 3, -1)).save(path)
    assert is_image_file(path)
    decoded = decode_image(path, 16, 3)
    assert decoded.shape == (3, 16, 16) and decoded.dtype == np.uint8


def test_hidden_and_non_image_files_are_not_images(tmp_path):
    assert not is_image_file(tmp_path / ".hidden.png")
    assert not is_image_file(tmp_path / "notes.txt")


def test_grayscale_feeds_rgb_and_rgb_feeds_grayscale(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(np.full((10, 10), 100, np.uint8)).save(path)
    rgb = decode_image(path, 10, 3)
    assert rgb.shape == (3, 10, 10) and (rgb == 100).all()
    color = tmp_path / "red.png"
    Image.new("RGB", (10, 10), (255, 0, 0)).save(color)
    assert decode_image(color, 10, 1)[0, 0, 0] == 76  # ITU-R 601 luma of pure red


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 32896, np.uint16)).save(path)  # mid-gray in 16 bits
    assert Image.open(path).mode.startswith("I")
    assert decode_image(path, 8, 1)[0, 0, 0] == 128


def test_transparent_pixels_become_white(tmp_path):
    path = tmp_path / "alpha.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(path)
    assert (decode_image(path, 8, 3) == 255).all()


def test_palette_and_cmyk(tmp_path):
    palette = tmp_path / "palette.gif"
    Image.new("RGB", (8, 8), (0, 0, 255)).convert("P").save(palette)
    assert tuple(decode_image(palette, 8, 3)[:, 0, 0]) == (0, 0, 255)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(cmyk)  # red in CMYK
    red = decode_image(cmyk, 8, 3)[:, 4, 4]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # left half white, landscape
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the displayed image is portrait, white on top
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    decoded = decode_image(path, 20, 1)[0]
    assert decoded[:5].mean() > 200 and decoded[-5:].mean() < 50


def test_corrupt_file_raises_oserror(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(OSError):
        decode_image(path, 8, 3)
