#!/usr/bin/env bash
# Installs the executor as a systemd service: a virtualenv under /opt/datahub-executor, the unit,
# the system user its tasks run as (datahub-task, through systemd-sysusers), and
# /etc/datahub-executor/executor.env from the settings template.
#
# Idempotent: run it again to upgrade (--package <new wheel>). It never overwrites an existing
# environment file (it holds the token); the venv, the unit and the user entry are brought up to
# date, an existing user is kept as it is.
#
# --root DIR installs into DIR instead of / (packaging, images, tests); then nothing is started
# and the host's users are not touched. The task user is created in DIR only when DIR has an
# /etc/passwd, i.e. is an operating system tree; in a staging tree (a package's payload) only
# /etc/sysusers.d/datahub-executor.conf is written, and the target creates the user from it
# (its package scripts run systemd-sysusers, as systemd's first boot does).
#
# The venv is relocatable (uv's --relocatable: each script finds its Python beside itself), so a
# tree staged with --root runs where it is unpacked; a pip-made venv's scripts would name the
# staging directory in their #! line, and start nowhere else.
#
# The venv also gets acryl-datahub[datahub-rest] at --datahub-version (by default the image's
# ACRYL_DATAHUB_VERSION): it is the CLI that recipes naming no version run with
# (DATAHUB_EXECUTOR_DEFAULT_CLI_VERSION=native, the default). --datahub-version '' installs none;
# then every recipe must pin a version, or that setting must name one.
#
#   sudo systemd/install.sh [--root DIR] [--package SPEC] [--datahub-version VERSION]
#                                                             SPEC: a wheel, a directory or a PyPI name
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="/"
package="$(cd "$here/.." && pwd)"
datahub_version="1.7.0.17"
uv_version="0.13.9"
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root="$2"; shift 2 ;;
        --package) package="$2"; shift 2 ;;
        --datahub-version) datahub_version="$2"; shift 2 ;;
        *) echo "install.sh: unknown argument $1 (use --root DIR, --package SPEC, --datahub-version VERSION)" >&2; exit 2 ;;
    esac
done
requirements=("$package")
if [ -n "$datahub_version" ]; then
    requirements+=("acryl-datahub[datahub-rest]==$datahub_version")
fi
env_file="$root/etc/datahub-executor/executor.env"
sysusers_conf="$root/etc/sysusers.d/datahub-executor.conf"
python="${PYTHON:-python3}"

install -d -m 0755 "$root/opt/datahub-executor" "$root/etc/systemd/system" "$root/etc/sysusers.d"
install -d -m 0750 "$root/etc/datahub-executor"

# The task user first: a failure here leaves nothing half-upgraded behind.
install -m 0644 "$here/datahub-executor.sysusers" "$sysusers_conf"
if [ "$root" = "/" ]; then
    if ! command -v systemd-sysusers >/dev/null; then
        echo "install.sh: systemd-sysusers not found; this installs a systemd service and needs systemd" >&2
        exit 1
    fi
    systemd-sysusers "$sysusers_conf"
elif [ -e "$root/etc/passwd" ]; then
    systemd-sysusers --root "$root" "$sysusers_conf"
else
    echo "install.sh: $root has no etc/passwd: the task user datahub-task is not created there; on the" \
         "target, systemd-sysusers /etc/sysusers.d/datahub-executor.conf creates it" >&2
fi

# uv, the image's version (deploy/docker/install-executor.sh), from a throwaway venv: it makes the
# service's venv and installs into it. The package itself is always reinstalled: uv would keep an
# installed directory or wheel of the same version, and an upgrade from a checkout is just that.
bootstrap="$(mktemp -d)"
trap 'rm -rf "$bootstrap"' EXIT
"$python" -m venv "$bootstrap/venv"
"$bootstrap/venv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$uv_version"
uv="$bootstrap/venv/bin/uv"
venv="$root/opt/datahub-executor/venv"
# Never a Python uv would download into root's home, which the unit hides (ProtectHome=yes).
export UV_PYTHON_DOWNLOADS=never
# A mirror named for pip is the one uv uses too (uv reads UV_INDEX_URL only).
if [ -n "${PIP_INDEX_URL:-}" ] && [ -z "${UV_INDEX_URL:-}" ]; then
    export UV_INDEX_URL="$PIP_INDEX_URL"
fi
if [ ! -e "$venv/pyvenv.cfg" ]; then
    "$uv" venv --quiet --relocatable --python "$("$python" -c 'import sys; print(sys.executable)')" "$venv"
fi
"$uv" pip install --quiet --link-mode copy --python "$venv/bin/python" \
    --reinstall-package datahub-remote-executor --upgrade-package datahub-remote-executor "${requirements[@]}"
install -m 0644 "$here/datahub-executor.service" "$root/etc/systemd/system/datahub-executor.service"

if [ -e "$env_file" ]; then
    echo "kept $env_file as it is (it holds your token); \`datahub-executor env-template\` lists every setting"
else
    (umask 077 && "$venv/bin/datahub-executor" env-template > "$env_file")
    chmod 0600 "$env_file"
    echo "edit $env_file (DATAHUB_GMS_URL, DATAHUB_GMS_TOKEN, DATAHUB_EXECUTOR_POOL_ID)"
fi
echo "installed into $root"
if [ "$root" = "/" ]; then
    systemctl daemon-reload
    echo "then: systemctl enable --now datahub-executor (or, on an upgrade, systemctl restart datahub-executor)" \
         "&& journalctl -u datahub-executor -f"
fi
