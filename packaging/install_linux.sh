#!/bin/sh
# Add Pocket NLP to the desktop's application menu, for the current user only (no root, nothing outside ~/.local).
#
#   ./install_linux.sh                          # from the unpacked bundle (PocketNLP/install_linux.sh)
#   packaging/install_linux.sh [BUNDLE_DIR]     # from a checkout; default BUNDLE_DIR: dist/PocketNLP
#   packaging/install_linux.sh --uninstall
#
# The entry is named after the executable so desktops match the running window to it: on X11 through
# StartupWMClass (Qt sets WM_CLASS "PocketNLP", "Pocket NLP"), on Wayland through the app id (Qt uses the
# executable's name while the app sets no desktopFileName).
# Installs ~/.local/share/applications/PocketNLP.desktop (pointing at BUNDLE_DIR/PocketNLP) and the icon in every
# drawn size under ~/.local/share/icons/hicolor/<size>x<size>/apps/pocketnlp.png (+ scalable SVG). The bundle
# itself stays where it is: move it first (e.g. to ~/.local/opt/PocketNLP), then run this.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
data=${XDG_DATA_HOME:-$HOME/.local/share}
apps=$data/applications
icons=$data/icons/hicolor

if [ "${1:-}" = "--uninstall" ]; then
    rm -f "$apps/PocketNLP.desktop"
    for f in "$icons"/*/apps/pocketnlp.png "$icons"/scalable/apps/pocketnlp.svg; do rm -f "$f"; done
    command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$apps" || true
    echo "Removed Pocket NLP from the application menu (the bundle folder itself was left alone)."
    exit 0
fi

if [ $# -ge 1 ]; then
    bundle=$(cd "$1" && pwd)
elif [ -x "$here/PocketNLP" ]; then
    bundle=$here
else
    bundle=$(cd "$here/.." && pwd)/dist/PocketNLP
fi
exe=$bundle/PocketNLP
if [ ! -x "$exe" ]; then
    echo "No PocketNLP executable in $bundle. Build it (python packaging/build.py) or pass the unpacked folder." >&2
    exit 1
fi
# Icons: the bundle's copy of resources/ (PyInstaller 6 puts data under _internal/), else the checkout's.
res=$bundle/_internal/resources
[ -d "$res" ] || res=$(cd "$here/.." && pwd)/resources
# The template: next to this script in the unpacked bundle (build.py copies both there), else in the checkout.
desktop=$here/PocketNLP.desktop
[ -f "$desktop" ] || desktop=$here/linux/PocketNLP.desktop

mkdir -p "$apps"
for png in "$res"/icon-*.png; do
    size=$(basename "$png" .png | sed 's/icon-//')
    mkdir -p "$icons/${size}x${size}/apps"
    cp "$png" "$icons/${size}x${size}/apps/pocketnlp.png"
done
if [ -f "$res/icon.svg" ]; then
    mkdir -p "$icons/scalable/apps"
    cp "$res/icon.svg" "$icons/scalable/apps/pocketnlp.svg"
fi
# The Exec key wants the path in double quotes with " ` $ \ escaped (spaces are fine); then escape it once more
# for sed's replacement text.
quoted=$(printf '"%s"' "$(printf '%s' "$exe" | sed 's/[\\"`$]/\\&/g')")
replacement=$(printf '%s' "$quoted" | sed 's/[\\&|]/\\&/g')
tryexec=$(printf '%s' "$exe" | sed 's/[\\&|]/\\&/g')  # TryExec: the plain path, no quoting
sed -e "s|@EXEC@|$replacement|g" -e "s|@TRYEXEC@|$tryexec|g" "$desktop" > "$apps/PocketNLP.desktop"
chmod 644 "$apps/PocketNLP.desktop"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$apps" || true
command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t "$icons" 2>/dev/null || true
if command -v desktop-file-validate >/dev/null 2>&1; then desktop-file-validate "$apps/PocketNLP.desktop"; fi
echo "Pocket NLP is in the application menu: $apps/PocketNLP.desktop -> $exe"
