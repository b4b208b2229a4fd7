"""`datahub-executor check`'s package index line for a mirror that wants a user and password in
PIP_INDEX_URL (http://user:password@host/simple/), as uv takes them: check printed the password,
and urllib, taking `user:password@host` for the host name, failed "Name or service not known"
though every build reached the mirror. The index here is a real HTTP server on 127.0.0.1 that
answers only requests carrying its Basic credentials."""
from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.executor.runtime.test_venv_builds_take_pips_index_settings import tls_index  # noqa: F401 (a fixture)
from tests.http_handler import QuietHandler

EXECUTOR = str(Path(sys.executable).parent / "datahub-executor")
USER, PASSWORD = "index-user", "index-p@ss-7"  # fake; the @ is written %40 in the URL, as uv reads it


@pytest.fixture
def private_index():
    """A package index on 127.0.0.1 that knows acryl-datahub and wants USER and PASSWORD."""
    wanted = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    asked: list[str | None] = []

    class Index(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            asked.append(self.headers.get("Authorization"))
            if self.headers.get("Authorization") != wanted:
                self.answer(401, b"credentials needed", {"WWW-Authenticate": 'Basic realm="index"'})
            elif self.path == "/simple/acryl-datahub/":
                self.answer(200, b"<html></html>", {"Content-Type": "text/html"})
            else:
                self.answer(404, b"not found")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], asked
    finally:
        server.shutdown()
        server.server_close()


def package_index_line(tmp_path: Path, index_url: str, name: str = "PIP_INDEX_URL", **more: str) -> str:
    """`check`'s package index line with INDEX_URL in the variable NAME (and MORE variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAHUB_", "AWS_", "PIP_", "UV_"))
           and "proxy" not in k.lower()}
    env.update({"DATAHUB_GMS_URL": "http://127.0.0.1:9/gms", "DATAHUB_GMS_TOKEN": "tok-not-used-here",
                "DATAHUB_EXECUTOR_POOL_ID": "remote", name: index_url, **more,
                "DATAHUB_EXECUTOR_SANDBOX_MODE": "none", "DATAHUB_EXECUTOR_TASK_USER": "none",
                "DATAHUB_EXECUTOR_HEALTH_ADDRESS": "127.0.0.1:0", "DATAHUB_EXECUTOR_WORK_DIR": str(tmp_path / "work"),
                "DATAHUB_EXECUTOR_VENV_CACHE_DIR": str(tmp_path / "venvs"),
                "DATAHUB_EXECUTOR_FILE_SECRET_BASEDIR": str(tmp_path / "absent")})
    done = subprocess.run([EXECUTOR, "check"], env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert "p@ss-7" not in output and "p%40ss-7" not in output and "wrong-7" not in output, "a password is printed"
    (line,) = [line for line in done.stdout.splitlines() if line[6:].startswith("package index:")]
    return line


def test_check_reaches_an_index_with_credentials_in_its_url_and_never_prints_the_password(tmp_path, private_index):
    port, asked = private_index
    line = package_index_line(tmp_path, f"http://{USER}:index-p%40ss-7@127.0.0.1:{port}/simple/")
    assert line == f"PASS  package index: http://***@127.0.0.1:{port}/simple/ reachable"
    assert len(asked) == 1, "the credentials went with the first request, as uv sends them"


def test_credentials_the_index_refuses_fail_naming_the_fix_and_not_the_password(tmp_path, private_index):
    port, _ = private_index
    line = package_index_line(tmp_path, f"http://{USER}:wrong-7@127.0.0.1:{port}/simple/")
    assert line == (f"FAIL  package index: http://***@127.0.0.1:{port}/simple/ refused the credentials (401): fix the "
                    "user and password in PIP_INDEX_URL")


def test_check_probes_the_index_uv_is_given_where_pip_index_url_is_unset(tmp_path, private_index):
    """Builds run uv, which reads UV_INDEX_URL (and prefers UV_DEFAULT_INDEX): check probed
    pypi.org instead, and passed or failed on an index no build uses."""
    port, asked = private_index
    line = package_index_line(tmp_path, f"http://{USER}:index-p%40ss-7@127.0.0.1:{port}/simple/", "UV_INDEX_URL")
    assert line == f"PASS  package index: http://***@127.0.0.1:{port}/simple/ reachable"
    assert len(asked) == 1, "the index uv is given was asked"


def test_uv_default_index_wins_as_in_uv_and_a_failure_names_it(tmp_path, private_index):
    port, _ = private_index
    line = package_index_line(tmp_path, f"http://{USER}:wrong-7@127.0.0.1:{port}/simple/", "UV_DEFAULT_INDEX",
                              UV_INDEX_URL="http://127.0.0.1:9/simple/")
    assert line == (f"FAIL  package index: http://***@127.0.0.1:{port}/simple/ refused the credentials (401): fix the "
                    "user and password in UV_DEFAULT_INDEX")


@pytest.mark.parametrize("trust", ["PIP_CERT", "PIP_TRUSTED_HOST"])
def test_check_trusts_an_https_index_as_builds_do(tmp_path, tls_index, trust):
    """A mirror whose certificate is signed by a private CA: builds trust it through PIP_CERT (uv
    gets it as SSL_CERT_FILE) or skip its verification for a PIP_TRUSTED_HOST (UV_INSECURE_HOST),
    and reach it (test_venv_builds_take_pips_index_settings.py builds from this very index). check
    verified it against the system's CAs alone: FAIL "not reachable (URLError): allow it, or set
    PIP_INDEX_URL to a mirror", naming a fix for a mirror that every build reached."""
    index, bundle = tls_index
    more = {"PIP_CERT": str(bundle)} if trust == "PIP_CERT" else {"PIP_TRUSTED_HOST": f"pypi.corp.example {index.host}"}
    line = package_index_line(tmp_path, index.url, **more)
    assert line == f"PASS  package index: {index.url} reachable"


def test_an_untrusted_certificate_fails_naming_what_builds_trust(tmp_path, tls_index):
    index, _ = tls_index
    line = package_index_line(tmp_path, index.url)
    assert line.startswith(f"FAIL  package index: {index.url} not reachable (its certificate is not trusted: ")
    assert line.endswith("set PIP_CERT to the bundle of the CA that signed it, as builds are given it"), line
