"""The executor's network settings that tasks and their virtualenv builds need too.

Task environments are built from scratch (never the executor's, which holds its token), so
what a network requires has to be passed on by name: the proxy (HTTPS_PROXY, HTTP_PROXY,
NO_PROXY, in both cases, as tools read either), the certificate authorities of a TLS-inspecting
proxy (SSL_CERT_FILE and the variables each tool reads instead), and, for virtualenv builds
only, the package index settings of pip and uv.
"""
from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

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


# Variables whose value is one URL (or, for PIP_EXTRA_INDEX_URL and PIP_FIND_LINKS, several,
# separated by spaces) that may carry credentials: user:password@host.
URL_VALUED = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy", "PIP_INDEX_URL",
              "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "UV_INDEX_URL", "UV_EXTRA_INDEX_URL")


def credentials(environ: Mapping[str, str]) -> list[str]:
    """The credentials in ENVIRON's proxy and package index URLs, for masking: each password as
    written and percent-decoded, and user:password decoded, whose base64 is what a Basic
    Proxy-Authorization header (which an HTTP client's debug output prints) carries. The
    executor hands these URLs to its tasks and builds; they are the operator's secrets, not the
    task's, and a task printing its environment must not ship them in its log."""
    found: set[str] = set()
    for name in URL_VALUED:
        for url in (environ.get(name) or "").split():
            try:
                parts = urlsplit(url if "://" in url else f"//{url}")
                user, password = parts.username, parts.password
            except ValueError:
                continue
            if password:
                found |= {password, unquote(password), f"{unquote(user or '')}:{unquote(password)}"}
            elif user:  # a token given as the user name alone (https://TOKEN@index)
                found |= {user, unquote(user)}
    return sorted(found)


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
