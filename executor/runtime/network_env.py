"""The executor's network settings that tasks and their virtualenv builds need too.

Task environments are built from scratch (never the executor's, which holds its token), so
what a network requires has to be passed on by name: the proxy (HTTPS_PROXY, HTTP_PROXY,
NO_PROXY, in both cases, as tools read either), the certificate authorities of a TLS-inspecting
proxy (SSL_CERT_FILE and the variables each tool reads instead), and, for virtualenv builds
only, the package index settings of pip and uv.

Builds run uv, which reads none of pip's variables: uv_names gives it the equivalent of each pip
setting an operator may have set for pip (docs/operations.md, "Networks with a proxy").
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

PROXY = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "no_proxy", "all_proxy")
TRUST = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "AWS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
PACKAGE_INDEX = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST", "PIP_CERT",
                 "PIP_DEFAULT_TIMEOUT", "UV_DEFAULT_INDEX", "UV_INDEX_URL", "UV_INDEX", "UV_EXTRA_INDEX_URL",
                 "UV_FIND_LINKS", "UV_INSECURE_HOST", "UV_INDEX_STRATEGY", "UV_NATIVE_TLS", "UV_SYSTEM_CERTS",
                 "UV_HTTP_TIMEOUT")


def for_tasks(environ: Mapping[str, str]) -> dict[str, str]:
    """Proxy and certificate settings, as set for the executor."""
    return {name: environ[name] for name in (*PROXY, *TRUST) if environ.get(name)}


def for_builds(environ: Mapping[str, str]) -> dict[str, str]:
    """What a package install needs: the proxy, the certificates and the package index."""
    return {name: environ[name] for name in (*PROXY, *TRUST, *PACKAGE_INDEX) if environ.get(name)}


# The index builds resolve from, in the order it is taken: PIP_INDEX_URL is the executor's own
# setting (executor/settings.py), and uv prefers UV_DEFAULT_INDEX to UV_INDEX_URL.
DEFAULT_INDEX = ("PIP_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX_URL")


def build_index(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The default package index virtualenv builds use, and the variable it comes from; None
    where none is set (uv's default, PyPI)."""
    return next(((name, environ[name]) for name in DEFAULT_INDEX if environ.get(name)), None)


def uv_names(environ: Mapping[str, str]) -> dict[str, str]:
    """ENVIRON (a build's) with each of pip's package index settings also given to uv under the
    name uv reads. uv takes lists in its own variables too, so where both are set they are joined
    (uv's first); a single value (the index, the certificate bundle) is pip's, as pip would use it.
    uv's UV_FIND_LINKS is separated by commas where pip's is by spaces, and uv's timeout is whole
    seconds: each was checked against the uv the executor ships (`uv pip install --help`)."""
    env = dict(environ)
    index = build_index(environ)
    if index:
        env["UV_DEFAULT_INDEX"] = index[1]

    def joined(uv_name: str, pip_name: str, separator: str) -> None:
        pip_values = (environ.get(pip_name) or "").split()
        if pip_values:
            env[uv_name] = separator.join(v for v in [environ.get(uv_name, ""), *pip_values] if v)

    joined("UV_EXTRA_INDEX_URL", "PIP_EXTRA_INDEX_URL", " ")
    joined("UV_FIND_LINKS", "PIP_FIND_LINKS", ",")
    joined("UV_INSECURE_HOST", "PIP_TRUSTED_HOST", " ")
    if environ.get("PIP_CERT"):
        env["SSL_CERT_FILE"] = environ["PIP_CERT"]  # pip's bundle replaces the default one: uv's does the same
    if environ.get("PIP_DEFAULT_TIMEOUT") and not environ.get("UV_HTTP_TIMEOUT"):
        try:
            env["UV_HTTP_TIMEOUT"] = str(math.ceil(float(environ["PIP_DEFAULT_TIMEOUT"])))
        except (ValueError, OverflowError):
            pass  # not a number: pip refuses it too, and uv keeps its own default
    return env


# Variables whose value is one URL, or several, that may carry credentials (user:password@host),
# and what separates them: spaces, but commas in UV_FIND_LINKS. UV_INDEX's entries may be named
# (name=URL).
URL_VALUED = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy", "PIP_INDEX_URL",
              "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "UV_DEFAULT_INDEX", "UV_INDEX_URL", "UV_INDEX",
              "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS")
SEPARATORS = {"UV_FIND_LINKS": r"[\s,]+"}
NAMED_ENTRY = re.compile(r"^[A-Za-z0-9_.-]+=(?=[A-Za-z][A-Za-z0-9+.-]*://)")


def credentials(environ: Mapping[str, str]) -> list[str]:
    """The credentials in ENVIRON's proxy and package index URLs, for masking: each password as
    written and percent-decoded, and user:password decoded, whose base64 is what a Basic
    Proxy-Authorization header (which an HTTP client's debug output prints) carries. The
    executor hands these URLs to its tasks and builds; they are the operator's secrets, not the
    task's, and a task printing its environment must not ship them in its log."""
    found: set[str] = set()
    for name in URL_VALUED:
        for entry in re.split(SEPARATORS.get(name, r"\s+"), environ.get(name) or ""):
            url = NAMED_ENTRY.sub("", entry)
            if not url:
                continue
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
            return f"{without_credentials(environ[name])} ({name})"
    return None


def without_credentials(url: str) -> str:
    """URL (a proxy's or an index's, with or without a scheme) as it may be printed: its user
    and password, if any, shown as ***."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}" if rest else "***@" + url.rsplit("@", 1)[1]
