"""Windows .ico and macOS .icns from the drawn PNGs in resources/ (run: python packaging/make_icons.py).

resources/make_icon.py draws icon-{16..512}.png; this packs them, unchanged, into packaging/icons/pocketnlp.ico
(16-256 px, what Explorer and the taskbar pick from) and packaging/icons/pocketnlp.icns (16-512 px, for the
macOS .app). Both files are committed so a build without Pillow still has them; packaging/build.py reruns this
script when Pillow is installed (the `bundle` extra), so they follow the drawing. Pillow is a build-time tool:
the bundle excludes it.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESOURCES, OUT = ROOT / "resources", ROOT / "packaging" / "icons"
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
ICNS_SIZES = (16, 32, 64, 128, 256, 512)


def main() -> int:
    from PIL import Image

    pngs = {int(p.stem.split("-")[1]): p for p in RESOURCES.glob("icon-*.png") if p.stem.split("-")[1].isdigit()}
    missing = [s for s in set(ICO_SIZES) | set(ICNS_SIZES) if s not in pngs]
    if missing:
        print(f"resources/ lacks icon-{{{','.join(map(str, sorted(missing)))}}}.png; run python resources/make_icon.py",
              file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    images = {s: Image.open(pngs[s]).convert("RGBA") for s in sorted(set(ICO_SIZES) | set(ICNS_SIZES))}
    # ICO: the largest image plus every drawn size appended as is (Pillow would otherwise rescale the largest).
    images[256].save(OUT / "pocketnlp.ico", format="ICO", sizes=[(s, s) for s in ICO_SIZES],
                     append_images=[images[s] for s in ICO_SIZES if s != 256])
    images[512].save(OUT / "pocketnlp.icns", format="ICNS", append_images=[images[s] for s in ICNS_SIZES[:-1]])
    for name in ("pocketnlp.ico", "pocketnlp.icns"):
        path = OUT / name
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
