"""pip's package index settings reach virtualenv builds, which run uv: uv reads none of pip's
variables, so the executor passed PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_TRUSTED_HOST and
PIP_CERT to every build and uv ignored each (only PIP_INDEX_URL was copied to uv's name). Each
test here builds a venv for real through VenvCache with the uv the executor ships, from package
indexes served on 127.0.0.1 (plain HTTP, and HTTPS with a certificate of a CA made for the test),
whose default index has nothing: only the pip setting under test can find the package."""
from __future__ import annotations

import datetime
import functools
import ipaddress
import ssl
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from executor.runtime import network_env
from executor.runtime.venvs import VenvCache
from tests.e2e.probe_packages import fake_datahub_wheel

VERSION = "0.0.1"  # the fake acryl-datahub's


class Index:
    """A directory served on 127.0.0.1 (over TLS with CONTEXT) as a simple package index: it
    knows acryl-datahub when given the wheel."""

    def __init__(self, directory: Path, *, wheel: bool, context: ssl.SSLContext | None = None) -> None:
        directory.mkdir()
        if wheel:  # without it, the project's page is not found (a listing of none would stop uv there)
            project = directory / "simple" / "acryl-datahub"
            project.mkdir(parents=True)
            name = fake_datahub_wheel(project, VERSION)
            (project / "index.html").write_text(f'<a href="{name}">{name}</a>\n')
        handler = functools.partial(SimpleHTTPRequestHandler, directory=str(directory))
        handler.log_message = lambda *args: None
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if context is not None:
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self.url = f"{'https' if context else 'http'}://{self.host}/simple/"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def empty_index(tmp_path):
    """The default index, PIP_INDEX_URL: a reachable one without the package."""
    index = Index(tmp_path / "empty", wheel=False)
    yield index
    index.stop()


@pytest.fixture
def extra_index(tmp_path):
    index = Index(tmp_path / "extra", wheel=True)
    yield index
    index.stop()


def _certificate(subject: str, key, issuer: str, issuer_key, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                        critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def tls_index(tmp_path):
    """An HTTPS index with the package, its certificate signed by a CA nobody trusts; the CA's
    bundle is the second value."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("dhx test CA", ca_key, "dhx test CA", ca_key, ca=True)
    leaf = _certificate("127.0.0.1", key, "dhx test CA", ca_key, ca=False)
    bundle, chain, private = tmp_path / "ca.pem", tmp_path / "index.pem", tmp_path / "index.key"
    bundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, private)
    index = Index(tmp_path / "tls", wheel=True, context=context)
    yield index, bundle
    index.stop()


def build(tmp_path: Path, index_url: str, network: dict[str, str]) -> Path:
    """The venv of acryl-datahub VERSION, built as the master builds it: PIP_INDEX_URL the setting,
    the rest what network_env.for_builds passes on."""
    venvs = VenvCache(str(tmp_path / "venvs"), index_url=index_url, network=network_env.for_builds(network))
    return Path(venvs.datahub_cli(VERSION, [], []))


def test_an_extra_index_in_pip_extra_index_url_is_where_a_build_finds_its_package(tmp_path, empty_index, extra_index):
    # Two, separated as pip separates them: uv takes a package from the first index that has it.
    cli = build(tmp_path, empty_index.url, {"PIP_EXTRA_INDEX_URL": f"{empty_index.url} {extra_index.url}"})
    assert cli.is_file()


def test_the_directories_in_pip_find_links_are_where_a_build_finds_its_package(tmp_path, empty_index):
    first, second = tmp_path / "links-a", tmp_path / "links-b"
    first.mkdir()
    second.mkdir()
    fake_datahub_wheel(second, VERSION)
    cli = build(tmp_path, empty_index.url, {"PIP_FIND_LINKS": f"{first} {second}"})  # pip's separator, a space
    assert cli.is_file()


def test_a_host_in_pip_trusted_host_is_reached_over_https_without_a_trusted_certificate(tmp_path, tls_index):
    index, _ = tls_index
    cli = build(tmp_path, index.url, {"PIP_TRUSTED_HOST": f"pypi.corp.example {index.host}"})
    assert cli.is_file()


def test_the_bundle_in_pip_cert_is_what_a_build_trusts_its_index_with(tmp_path, tls_index):
    index, bundle = tls_index
    cli = build(tmp_path, index.url, {"PIP_CERT": str(bundle)})
    assert cli.is_file()


def test_uv_gets_each_pip_setting_under_its_own_name_and_keeps_its_own_values():
    env = network_env.uv_names({
        "PIP_INDEX_URL": "https://pip.example/simple", "UV_INDEX_URL": "https://uv.example/simple",
        "PIP_EXTRA_INDEX_URL": "https://a.example/simple https://b.example/simple",
        "UV_EXTRA_INDEX_URL": "https://uv-extra.example/simple",
        "PIP_FIND_LINKS": "/opt/wheels  https://c.example/links", "UV_FIND_LINKS": "/srv/wheels",
        "PIP_TRUSTED_HOST": "a.example b.example:8443", "PIP_CERT": "/etc/corp-ca.pem",
        "SSL_CERT_FILE": "/etc/proxy-ca.pem", "PIP_DEFAULT_TIMEOUT": "15.5"})
    assert env["UV_DEFAULT_INDEX"] == "https://pip.example/simple", "PIP_INDEX_URL, the executor's setting, wins"
    assert env["UV_EXTRA_INDEX_URL"] == "https://uv-extra.example/simple https://a.example/simple https://b.example/simple"
    assert env["UV_FIND_LINKS"] == "/srv/wheels,/opt/wheels,https://c.example/links", "uv separates them by commas"
    assert env["UV_INSECURE_HOST"] == "a.example b.example:8443"
    assert env["SSL_CERT_FILE"] == "/etc/corp-ca.pem", "pip's bundle replaces the default, as for pip"
    assert env["UV_HTTP_TIMEOUT"] == "16", "uv takes whole seconds"
    assert network_env.uv_names({"UV_HTTP_TIMEOUT": "30", "PIP_DEFAULT_TIMEOUT": "x"}) == {
        "UV_HTTP_TIMEOUT": "30", "PIP_DEFAULT_TIMEOUT": "x"}


@pytest.mark.parametrize(("environ", "index"), [
    ({}, None),
    ({"UV_INDEX_URL": "https://old.example/simple"}, ("UV_INDEX_URL", "https://old.example/simple")),
    ({"UV_INDEX_URL": "https://old.example/simple", "UV_DEFAULT_INDEX": "https://new.example/simple"},
     ("UV_DEFAULT_INDEX", "https://new.example/simple")),
    ({"UV_DEFAULT_INDEX": "https://new.example/simple", "PIP_INDEX_URL": "https://pip.example/simple"},
     ("PIP_INDEX_URL", "https://pip.example/simple")),
])
def test_the_index_builds_use_is_pips_then_uvs_default_then_uvs_old_name(environ, index):
    assert network_env.build_index(environ) == index


def test_credentials_in_every_uv_index_name_are_found_for_masking():
    found = network_env.credentials({
        "UV_DEFAULT_INDEX": "https://u1:default-pw@a.example/simple",
        "UV_INDEX": "internal=https://u2:named-pw@b.example/simple https://token-3f@c.example/simple",
        "UV_FIND_LINKS": "/opt/wheels,https://u4:links-pw@d.example/links"})
    assert {"default-pw", "named-pw", "token-3f", "links-pw", "u2:named-pw"} <= set(found)
    assert not any("example" in value or "internal" in value for value in found), "hosts and names are no credentials"
