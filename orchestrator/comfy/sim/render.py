"""
Placeholder images for the simulator: cheap, deterministic, and recognisable.

Pure Pillow functions (call them through asyncio.to_thread). A txt2img image depends only on prompt, seed and
size; img2img visibly keeps the input's layout; an upscale is a plain resize. Drawing happens on a tiny canvas
that is then resized, so even 1024² costs a few milliseconds.
"""

from __future__ import annotations

import hashlib
import io
import random

from PIL import Image, ImageDraw, ImageFont

#: side of the low-resolution canvas the shapes are drawn on
_CANVAS = 64


def _rng(prompt: str, seed: int) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _color(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def _canvas_size(width: int, height: int) -> tuple[int, int]:
    scale = _CANVAS / max(width, height, 1)
    return max(4, round(width * scale)), max(4, round(height * scale))


def _label(prompt: str, seed: int) -> str:
    words = " ".join(prompt.split()[:4])
    return f"{words[:40]} #{seed}"


def _draw_label(img: Image.Image, text: str) -> None:
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = 3
    box = (4, img.height - (bottom - top) - 2 * pad - 4, 4 + right - left + 2 * pad, img.height - 4)
    draw.rectangle(box, fill=(0, 0, 0))
    draw.text((box[0] + pad - left, box[1] + pad - top), text, fill=(255, 255, 255), font=font)


def _scene(prompt: str, seed: int, width: int, height: int) -> Image.Image:
    """The low-resolution scene: a two-colour gradient and a few shapes from the seeded RNG."""
    rng = _rng(prompt, seed)
    cw, ch = _canvas_size(width, height)
    top, bottom = Image.new("RGB", (cw, ch), _color(rng)), Image.new("RGB", (cw, ch), _color(rng))
    mask = Image.linear_gradient("L").resize((cw, ch)).rotate(rng.choice((0, 90, 180, 270)))
    img = Image.composite(bottom, top, mask)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(3, 6)):
        x0, y0 = rng.randrange(cw), rng.randrange(ch)
        x1, y1 = x0 + rng.randint(4, cw // 2 + 4), y0 + rng.randint(4, ch // 2 + 4)
        shape = draw.ellipse if rng.random() < 0.6 else draw.rectangle
        shape((x0, y0, x1, y1), fill=_color(rng))
    return img


def render_txt2img(prompt: str, seed: int, width: int, height: int) -> Image.Image:
    """A stand-in for a txt2img result: same inputs, same picture."""
    img = _scene(prompt, seed, width, height).resize((width, height), Image.Resampling.BILINEAR)
    _draw_label(img, _label(prompt, seed))
    return img


def render_img2img(source: Image.Image, prompt: str, seed: int, denoise: float, width: int, height: int) -> Image.Image:
    """A stand-in for img2img: the source with a new scene blended in by `denoise` (0 keeps the source)."""
    base = source.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    fresh = _scene(prompt, seed, width, height).resize((width, height), Image.Resampling.BILINEAR)
    # Keep the source dominant even at denoise 1.0 so the lineage stays visible.
    img = Image.blend(base, fresh, max(0.0, min(1.0, denoise)) * 0.6)
    _draw_label(img, _label(prompt, seed))
    return img


def resize(image: Image.Image, width: int, height: int) -> Image.Image:
    """ImageScale: a plain resize (width or height 0 keeps the aspect ratio, as in ComfyUI)."""
    if width == 0 and height == 0:
        return image.copy()
    if width == 0:
        width = max(1, round(image.width * height / image.height))
    if height == 0:
        height = max(1, round(image.height * width / image.width))
    return image.resize((width, height), Image.Resampling.BILINEAR)


def upscale(image: Image.Image, factor: int = 4) -> Image.Image:
    """A model upscale: resize by `factor`."""
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.BICUBIC)


def preview(prompt: str, seed: int, step: int, total: int, side: int = 64) -> bytes:
    """A small JPEG preview that sharpens as the steps go by."""
    img = _scene(prompt, seed, side, side).resize((side, side), Image.Resampling.BILINEAR)
    noise = Image.effect_noise((side, side), 64).convert("RGB")
    img = Image.blend(noise, img, step / max(1, total))
    return encode_jpeg(img, 70)


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes (fast compression: these are stand-ins)."""
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def encode_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    """JPEG bytes."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def encode_webp(image: Image.Image, quality: int = 90) -> bytes:
    """WebP bytes."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "WEBP", quality=quality)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    """Decode image bytes into an RGB image (raises OSError / ValueError on garbage)."""
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")
