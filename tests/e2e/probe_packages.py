"""Packages served on 127.0.0.1 for the isolation tests: a wheel named acryl-datahub whose
`datahub` command is tests/e2e/probes/fake_datahub.py, and an sdist whose build backend
(tests/e2e/probes/build_backend.py) records who builds it. No package index needed."""
from __future__ import annotations

import base64
import functools
import hashlib
import io
import tarfile
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PROBES = Path(__file__).parent / "probes"


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def fake_datahub_wheel(directory: Path, version: str = "0.0.1", command: bool = True) -> str:
    """A wheel named acryl-datahub VERSION; with COMMAND, it installs a `datahub` command."""
    dist = f"acryl_datahub-{version}.dist-info"
    files = {
        "dhx_fake_datahub.py": (PROBES / "fake_datahub.py").read_bytes(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: acryl-datahub\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: dhx-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    if command:
        files[f"{dist}/entry_points.txt"] = b"[console_scripts]\ndatahub = dhx_fake_datahub:main\n"
    record = "".join(f"{path},{_digest(data)},{len(data)}\n" for path, data in files.items()) + f"{dist}/RECORD,,\n"
    name = f"acryl_datahub-{version}-py3-none-any.whl"
    with zipfile.ZipFile(directory / name, "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
        wheel.writestr(f"{dist}/RECORD", record)
    return name


def probe_sdist(directory: Path) -> str:
    return sdist_with_backend(directory, "dhxprobe", (PROBES / "build_backend.py").read_bytes())


def sdist_with_backend(directory: Path, project: str, backend: bytes) -> str:
    """PROJECT 0.1 as an sdist in DIRECTORY whose in-tree build backend is BACKEND: what runs at
    install time is the test's to choose. Returns the file's name."""
    name = f"{project}-0.1.tar.gz"
    root = f"{project}-0.1"
    files = {
        f"{root}/pyproject.toml": b'[build-system]\nrequires = []\nbuild-backend = "build_backend"\n'
                                  b'backend-path = ["."]\n\n[project]\nname = "' + project.encode() +
                                  b'"\nversion = "0.1"\n',
        f"{root}/build_backend.py": backend,
        f"{root}/PKG-INFO": f"Metadata-Version: 2.1\nName: {project}\nVersion: 0.1\n".encode(),
    }
    with tarfile.open(directory / name, "w:gz") as sdist:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            sdist.addfile(info, io.BytesIO(data))
    return name


class PackageServer:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.wheel = fake_datahub_wheel(directory)
        self.sdist = probe_sdist(directory)
        handler = functools.partial(SimpleHTTPRequestHandler, directory=str(directory))
        handler.log_message = lambda *args: None
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def stop(self) -> None:
        self._server.shutdown()
