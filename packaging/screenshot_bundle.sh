#!/bin/sh
# Start the bundled app under a virtual X display and take a screenshot of its window, as a person would see it.
#
#   packaging/screenshot_bundle.sh [BUNDLE_DIR] [OUT_DIR]     # defaults: dist/PocketNLP, screenshots/bundle
#
# Needs Xvfb and ImageMagick's `import` (Debian/Ubuntu: apt-get install -y xvfb imagemagick x11-utils, plus
# libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 for Qt's xcb platform). The app runs against an empty temporary
# store and settings, so the picture is what a new user sees first. OUT_DIR (git-ignored screenshots/) gets
# bundle-start.png. Exit status 1 when the window never appears.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
bundle=${1:-$root/dist/PocketNLP}
out=${2:-$root/screenshots/bundle}
exe=$bundle/PocketNLP
[ -x "$exe" ] || { echo "No $exe: build it first (python packaging/build.py)." >&2; exit 1; }
for tool in Xvfb import xwininfo; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool is missing (apt-get install -y xvfb imagemagick x11-utils)." >&2; exit 1; }
done
mkdir -p "$out"
tmp=$(mktemp -d)
display=:$(( 90 + $$ % 100 ))
Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp >"$tmp/xvfb.log" 2>&1 &
xvfb=$!
app=
cleanup() {
    [ -n "$app" ] && kill "$app" 2>/dev/null || true
    kill "$xvfb" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
for _ in $(seq 50); do xwininfo -root -display "$display" >/dev/null 2>&1 && break; sleep 0.1; done

DISPLAY=$display POCKET_NLP_HOME=$tmp/store XDG_CONFIG_HOME=$tmp/config HF_HOME=$tmp/hf HF_HUB_OFFLINE=1 \
    QT_QPA_PLATFORM=xcb "$exe" >"$tmp/app.log" 2>&1 &
app=$!
shown=
for _ in $(seq 150); do
    if xwininfo -root -tree -display "$display" 2>/dev/null | grep -q '"Pocket NLP"'; then shown=1; break; fi
    kill -0 "$app" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$shown" ]; then
    echo "The window never appeared. App output:" >&2
    cat "$tmp/app.log" >&2
    exit 1
fi
sleep 2  # let the first paint and any start-up work settle
import -display "$display" -window root "$out/bundle-start.png"
echo "Screenshot: $out/bundle-start.png"
