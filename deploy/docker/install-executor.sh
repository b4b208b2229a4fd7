#!/bin/sh
# Installs the executor, and the acryl-datahub CLI it runs for recipes that pin no version, into a
# new virtualenv. This is the only install logic of the container image (Dockerfile), and the test
# suite runs this same script in a fresh virtualenv (tests/deploy/test_container_image.py), so what
# the image gets is what the tests start.
#
# usage: install-executor.sh SOURCE_DIR PREFIX [ACRYL_DATAHUB_VERSION]
#   SOURCE_DIR             the project checkout (setup.cfg at its top)
#   PREFIX                 where the virtualenv goes, e.g. /opt/datahub-executor
#   ACRYL_DATAHUB_VERSION  the `native` CLI version; empty: install none (recipes must pin one)
# Honors UV_NO_CACHE / UV_INDEX_URL / PIP_INDEX_URL like uv and pip themselves.
set -eu
if [ $# -lt 2 ]; then
    echo "usage: $0 SOURCE_DIR PREFIX [ACRYL_DATAHUB_VERSION]" >&2
    exit 2
fi
src="$1"
prefix="$2"
datahub_version="${3:-}"
# uv resolves and installs the ~60 packages of acryl-datahub in seconds, where pip takes minutes;
# it is also what the executor uses at run time for task virtualenvs, so it is installed anyway.
uv_version="0.13.9"

python3 -m venv "$prefix"
"$prefix/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$uv_version"
set -- "$src"
if [ -n "$datahub_version" ]; then
    set -- "$@" "acryl-datahub[datahub-rest]==$datahub_version"
fi
"$prefix/bin/uv" pip install --quiet --python "$prefix/bin/python" "$@"
"$prefix/bin/datahub-executor" settings-table >/dev/null
