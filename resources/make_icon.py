"""Draw the application icon: resources/icon.svg and icon-{16..512}.png (run: python resources/make_icon.py).

The icon: a rounded teal square (the "pocket") holding a large speech bubble — language — with a small orange
bubble in front of it — the INT8 copy, smaller and the same shape. Drawn with QPainter from the same geometry as
the SVG so both stay in step.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
TEAL, TEAL_DARK, WHITE, ORANGE, BLUE = "#2f7d6d", "#1f5a4e", "#ffffff", "#e07b39", "#5b7db1"

SVG = f"""<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512" viewBox="0 0 512 512">
  <defs><linearGradient id="bg" x1="0" y1="0" x2="0" y2="1">
    <stop offset="0" stop-color="{TEAL}"/><stop offset="1" stop-color="{TEAL_DARK}"/></linearGradient></defs>
  <rect x="24" y="24" width="464" height="464" rx="104" fill="url(#bg)"/>
  <path d="M96 132 h264 a40 40 0 0 1 40 40 v120 a40 40 0 0 1 -40 40 h-150 l-62 52 v-52 h-52
           a40 40 0 0 1 -40 -40 v-120 a40 40 0 0 1 40 -40 z" fill="{WHITE}"/>
  <rect x="132" y="188" width="176" height="22" rx="11" fill="{BLUE}"/>
  <rect x="132" y="234" width="120" height="22" rx="11" fill="{BLUE}"/>
  <path d="M300 292 h116 a26 26 0 0 1 26 26 v62 a26 26 0 0 1 -26 26 h-24 v34 l-40 -34 h-52
           a26 26 0 0 1 -26 -26 v-62 a26 26 0 0 1 26 -26 z" fill="{ORANGE}" stroke="{WHITE}" stroke-width="12"/>
  <rect x="306" y="332" width="104" height="16" rx="8" fill="{WHITE}"/>
  <rect x="306" y="362" width="64" height="16" rx="8" fill="{WHITE}"/>
</svg>
"""


def draw(size: int):
    from PySide6.QtCore import QRectF, Qt
    from PySide6.QtGui import QColor, QImage, QLinearGradient, QPainter, QPainterPath, QPen

    img = QImage(size, size, QImage.Format_ARGB32)
    img.fill(Qt.transparent)
    p = QPainter(img)
    p.setRenderHint(QPainter.Antialiasing)
    p.scale(size / 512, size / 512)
    grad = QLinearGradient(0, 0, 0, 512)
    grad.setColorAt(0, QColor(TEAL))
    grad.setColorAt(1, QColor(TEAL_DARK))
    p.setPen(Qt.NoPen)
    p.setBrush(grad)
    p.drawRoundedRect(QRectF(24, 24, 464, 464), 104, 104)

    def bubble(x, y, w, h, r, tail_x, tail_w, tail_h, left_tail: bool) -> QPainterPath:
        path = QPainterPath()
        path.addRoundedRect(QRectF(x, y, w, h), r, r)
        tail = QPainterPath()
        if left_tail:
            tail.moveTo(tail_x, y + h - 1)
            tail.lineTo(tail_x, y + h + tail_h)
            tail.lineTo(tail_x + tail_w, y + h - 1)
        else:
            tail.moveTo(tail_x, y + h - 1)
            tail.lineTo(tail_x, y + h + tail_h)
            tail.lineTo(tail_x - tail_w, y + h - 1)
        tail.closeSubpath()
        return path.united(tail)

    p.setBrush(QColor(WHITE))
    p.drawPath(bubble(56, 132, 344, 200, 40, 148, 62, 52, True))
    if size >= 32:
        p.setBrush(QColor(BLUE))
        p.drawRoundedRect(QRectF(132, 188, 176, 22), 11, 11)
        p.drawRoundedRect(QRectF(132, 234, 120, 22), 11, 11)
    p.setPen(QPen(QColor(WHITE), 12 if size >= 32 else 20))
    p.setBrush(QColor(ORANGE))
    p.drawPath(bubble(274, 292, 168, 114, 26, 392, 40, 34, False))
    if size >= 48:
        p.setPen(Qt.NoPen)
        p.setBrush(QColor(WHITE))
        p.drawRoundedRect(QRectF(306, 332, 104, 16), 8, 8)
        p.drawRoundedRect(QRectF(306, 362, 64, 16), 8, 8)
    p.end()
    return img


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication(sys.argv)  # noqa: F841 - fonts and images need one
    (HERE / "icon.svg").write_text(SVG, encoding="utf-8")
    for size in SIZES:
        if not draw(size).save(str(HERE / f"icon-{size}.png")):
            raise SystemExit(f"could not write icon-{size}.png")
    print(f"wrote icon.svg and {len(SIZES)} PNG sizes to {HERE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
