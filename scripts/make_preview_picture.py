"""Regenerate the README's preview picture: `hetcache edit --preview` on the embedded demo clip.

    python scripts/make_preview_picture.py                 # writes docs/preview_demo.png
    python scripts/make_preview_picture.py --out other.png

The picture is the preview's contact sheet (source / mask outlined / edit for four frames of the
window), written beside a scratch output in a temporary folder and reduced to a 128-colour palette
that keeps the outline's cyan, white and black (an eighth of the bytes) for the repository.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"


def small_png(image: Image.Image, path: Path, colors: int = 128) -> None:
    """`image` as a palette PNG: its `colors - 3` commonest colours, then exact cyan, white and black."""
    palette = image.quantize(colors=colors - 3, method=Image.Quantize.MEDIANCUT).getpalette()[: (colors - 3) * 3]
    palette += [0, 255, 255, 255, 255, 255, 0, 0, 0]
    reference = Image.new("P", (1, 1))
    reference.putpalette(palette + [0] * (768 - len(palette)))
    image.quantize(palette=reference, dither=Image.Dither.NONE).save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "preview_demo.png", help="PNG to write")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "demo.mp4"
        cmd = [sys.executable, "-m", "hetcache_cli", "edit", str(DEMO / "input.mp4"), "--mask", str(DEMO / "mask.png"),
               "--prompt", "a red ball", "-o", str(output), "--preview", "--quiet"]  # fmt: skip
        print("$ hetcache edit assets/demo/input.mp4 --mask assets/demo/mask.png --prompt 'a red ball' --preview")
        subprocess.run(cmd, check=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(output.with_name("demo.preview.png")) as sheet:
            small_png(sheet.convert("RGB"), args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
