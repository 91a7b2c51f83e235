"""An OctoPrint plugin as a real wheel, written by the test itself: pip installs it with nothing to
compile or fetch, the way OctoPrint's Plugin Manager installs one from a URL."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path


def plugin_wheel(
    folder: Path,
    *,
    dist: str,
    key: str,
    version: str,
    sources: Mapping[str, str],
    summary: str,
    requires: Sequence[str] = (),
) -> Path:
    """Wheel of dist (an importable package named after it, lowercased) in folder: sources are its
    package's files by name, key is the plugin's identifier in OctoPrint's entry point."""
    package = dist.lower().replace("-", "_")
    info = f"{dist.replace('-', '_')}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\nSummary: {summary}\n"
    files = {f"{package}/{name}": text for name, text in sources.items()}
    files |= {
        f"{info}/METADATA": metadata + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: octobrix-lab\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": f"[octoprint.plugin]\n{key} = {package}\n",
        f"{info}/top_level.txt": f"{package}\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    path = folder / f"{dist.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        archive.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path
