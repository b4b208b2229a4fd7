"""The executor's network settings that tasks and their virtualenv builds need too.

Task environments are built from scratch (never the executor's, which holds its token), so
what a network requires has to be passed on by name: the proxy (HTTPS_PROXY, HTTP_PROXY,
NO_PROXY, in both cases, as tools read either), the certificate authorities of a TLS-inspecting
proxy (SSL_CERT_FILE and the variables each tool reads instead), and, for virtualenv builds
only, the package index settings of pip and uv.
"""
from __future__ import annotations

from collections.abc import Mapping

PROXY = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "no_proxy", "all_proxy")
TRUST = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "AWS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
PACKAGE_INDEX = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST", "PIP_CERT",
                 "PIP_DEFAULT_TIMEOUT", "UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_NATIVE_TLS", "UV_HTTP_TIMEOUT")


def for_tasks(environ: Mapping[str, str]) -> dict[str, str]:
    """Proxy and certificate settings, as set for the executor."""
    return {name: environ[name] for name in (*PROXY, *TRUST) if environ.get(name)}


def for_builds(environ: Mapping[str, str]) -> dict[str, str]:
    """What a package install needs: the proxy, the certificates and the package index."""
    return {name: environ[name] for name in (*PROXY, *TRUST, *PACKAGE_INDEX) if environ.get(name)}


def proxy_in_use(environ: Mapping[str, str]) -> str | None:
    """The proxy HTTPS traffic goes through, as `check` reports it (credentials hidden)."""
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if environ.get(name):
            value = environ[name]
            if "@" in value:
                scheme, _, rest = value.partition("://")
                value = f"{scheme}://***@{rest.rsplit('@', 1)[1]}" if rest else "***@" + value.rsplit("@", 1)[1]
            return f"{value} ({name})"
    return None
