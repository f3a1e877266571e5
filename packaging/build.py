"""Build the Pocket NLP application bundle: one command, from a checkout with the `bundle` extra installed.

    pip install -e ".[bundle]"
    python packaging/build.py              # dist/PocketNLP/ + dist/PocketNLP-<version>-<os>-<arch>.tar.gz (.zip on Windows)
    python packaging/build.py --self-test  # ... then run the bundle's own self-test, offscreen

Steps: write the version stamp (build/build_info.json: version, git commit, build time, platform), refresh the
Windows/macOS icons from resources/ when Pillow is installed, run PyInstaller on packaging/pocketnlp.spec, check
that nothing that must stay out (torch, transformers, sympy, tests, __pycache__) got in, report the size, and
archive dist/PocketNLP/. On macOS PyInstaller also writes dist/PocketNLP.app. Nothing is signed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIST, BUILD = ROOT / "dist", ROOT / "build"
BUNDLE = DIST / "PocketNLP"
# Paths (relative to the bundle) that mean something leaked in.
FORBIDDEN = ("torch", "transformers", "sympy", "optimum", "tests", "__pycache__", "PySide6/Qt/qml",
             "PySide6/Qt/translations", "libQt6WebEngineCore", "libQt6Quick", "libQt6Qml")


def version() -> str:
    sys.path.insert(0, str(ROOT))
    from app import __version__

    return __version__


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def platform_tag() -> str:
    system = {"linux": "linux", "darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform)
    machine = platform.machine().lower().replace("amd64", "x86_64").replace("aarch64", "arm64")
    return f"{system}-{machine}"


def write_stamp() -> Path:
    """The version stamp the bundle carries (read by `PocketNLP --self-test`)."""
    commit = git("rev-parse", "HEAD")
    info = {"name": "Pocket NLP", "version": version(), "commit": commit[:12] or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "platform": platform_tag(),
            "python": platform.python_version()}
    BUILD.mkdir(exist_ok=True)
    stamp = BUILD / "build_info.json"
    stamp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return stamp


def windows_version_file() -> Path:
    """PyInstaller's version resource, so Explorer's Properties show the product and version."""
    parts = (version().split(".") + ["0", "0", "0"])[:4]
    numbers = tuple(int("".join(ch for ch in p if ch.isdigit()) or 0) for p in parts)
    text = f"""VSVersionInfo(
  ffi=FixedFileInfo(filevers={numbers}, prodvers={numbers}, mask=0x3f, flags=0x0, OS=0x40004, fileType=0x1,
                    subtype=0x0, date=(0, 0)),
  kids=[StringFileInfo([StringTable('040904B0', [
      StringStruct('CompanyName', 'Pocket NLP'), StringStruct('FileDescription', 'Pocket NLP'),
      StringStruct('FileVersion', '{version()}'), StringStruct('InternalName', 'PocketNLP'),
      StringStruct('OriginalFilename', 'PocketNLP.exe'), StringStruct('ProductName', 'Pocket NLP'),
      StringStruct('ProductVersion', '{version()}')])]),
        VarFileInfo([VarStruct('Translation', [1033, 1200])])]
)
"""
    path = BUILD / "file_version_info.txt"
    path.write_text(text, encoding="utf-8")
    return path


def refresh_icons() -> None:
    try:
        import PIL  # noqa: F401
    except ImportError:
        print("Pillow is not installed: using the committed packaging/icons/ (pip install -e '.[bundle]' to refresh)")
        return
    subprocess.run([sys.executable, str(ROOT / "packaging" / "make_icons.py")], check=True)


def strip_symbols(folder: Path) -> None:
    """Linux: strip the symbol tables some libraries ship with (libpython and lib-dynload of pyenv/conda builds,
    Rust extensions such as tokenizers and hf_xet): about 15 MB of the bundle for nothing at run time.

    Only ELF files that still have a .symtab and that auditwheel did not touch (not in a `*.libs/` folder, no
    RPATH into one): auditwheel rewrites those with patchelf, and stripping a patchelf-ed file breaks it (numpy's OpenBLAS
    then fails with "ELF load command address/offset not page-aligned"), which is why PyInstaller's own strip=True
    is off. The executable is never touched (PyInstaller appends its archive to it)."""
    tool, readelf = shutil.which("strip"), shutil.which("readelf")
    if not sys.platform.startswith("linux") or not tool or not readelf:
        return
    saved, count = 0, 0
    for path in sorted((folder / "_internal").rglob("*")):
        if path.is_symlink() or not path.is_file() or any(p.endswith(".libs") for p in path.parts):
            continue
        with path.open("rb") as f:
            if f.read(4) != b"\x7fELF":
                continue
        info = subprocess.run([readelf, "-S", "-d", "-W", str(path)], capture_output=True, text=True).stdout
        rpaths = [line for line in info.splitlines() if "(RPATH)" in line or "(RUNPATH)" in line]
        if ".symtab" not in info or any(".libs" in line for line in rpaths):  # auditwheel: $ORIGIN/../x.libs
            continue
        before = path.stat().st_size
        subprocess.run([tool, "--strip-unneeded", str(path)], check=True)
        saved, count = saved + before - path.stat().st_size, count + 1
    print(f"stripped symbols from {count} libraries: {saved / 2**20:.0f} MiB less")


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def leaks(folder: Path) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        for bad in FORBIDDEN:
            if f"/{bad}/" in f"/{rel}/" or (bad.startswith("lib") and path.name.startswith(bad)) or (
                    "/" in bad and rel.endswith(bad)):
                found.append(rel)
                break
    return found


def archive() -> list[Path]:
    base = DIST / f"PocketNLP-{version()}-{platform_tag()}"
    fmt = "zip" if sys.platform == "win32" else "gztar"
    made = [Path(shutil.make_archive(str(base), fmt, root_dir=DIST, base_dir="PocketNLP"))]
    app = DIST / "PocketNLP.app"
    if sys.platform == "darwin" and app.is_dir() and shutil.which("ditto"):
        # ditto keeps the framework symlinks and permissions a zipfile would lose (untested here: built on Linux).
        zipped = Path(f"{base}-app.zip")
        subprocess.run(["ditto", "-c", "-k", "--sequesterRsrc", "--keepParent", str(app), str(zipped)], check=True)
        made.append(zipped)
    return made


def executable() -> Path:
    return BUNDLE / ("PocketNLP.exe" if sys.platform == "win32" else "PocketNLP")


def run_self_test() -> int:
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"))
    print(f"$ {executable()} --self-test", flush=True)
    return subprocess.run([str(executable()), "--self-test"], env=env).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-test", action="store_true", help="run the bundle's self-test after building")
    parser.add_argument("--no-archive", action="store_true", help="skip the .tar.gz/.zip")
    parser.add_argument("--windowed", action="store_true",
                        help="Windows/macOS: no console window (the CLI and --self-test then print nothing)")
    args = parser.parse_args()
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        print("PyInstaller is not installed. Run: pip install -e \".[bundle]\"", file=sys.stderr)
        return 2

    started = time.monotonic()
    env = dict(os.environ, POCKET_NLP_BUILD_INFO=str(write_stamp()))
    if sys.platform == "win32":
        env["POCKET_NLP_WIN_VERSION_FILE"] = str(windows_version_file())
    if args.windowed:
        env["POCKET_NLP_WINDOWED"] = "1"
    refresh_icons()
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
           "--distpath", str(DIST), "--workpath", str(BUILD / "pyinstaller"), str(ROOT / "packaging" / "pocketnlp.spec")]
    print("$ " + " ".join(cmd), flush=True)
    if subprocess.run(cmd, cwd=ROOT, env=env).returncode != 0:
        print("PyInstaller failed; see the messages above.", file=sys.stderr)
        return 1

    strip_symbols(BUNDLE)
    if sys.platform.startswith("linux"):  # the menu entry installer travels with the bundle
        shutil.copy2(ROOT / "packaging" / "install_linux.sh", BUNDLE / "install_linux.sh")
        shutil.copy2(ROOT / "packaging" / "linux" / "PocketNLP.desktop", BUNDLE / "PocketNLP.desktop")
    bad = leaks(BUNDLE)
    if bad:
        print("These must not be in the bundle (fix the excludes in packaging/pocketnlp.spec):\n  "
              + "\n  ".join(bad[:30]), file=sys.stderr)
        return 1
    size = folder_bytes(BUNDLE)
    print(f"Built {BUNDLE} in {time.monotonic() - started:.0f} s: {size / 2**20:.0f} MiB ({size / 1e6:.0f} MB) unpacked, "
          f"{sum(1 for f in BUNDLE.rglob('*') if f.is_file())} files")
    if not args.no_archive:
        for path in archive():
            print(f"Archive: {path} ({path.stat().st_size / 2**20:.0f} MiB)")
    if args.self_test:
        return run_self_test()
    return 0


if __name__ == "__main__":
    sys.exit(main())
