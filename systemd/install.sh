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
# The service's Python is PYTHON (python3 on PATH by default). It must be 3.10 or newer (setup.cfg's
# python_requires) and live outside /home, /root and /run/user, which the unit's ProtectHome=yes
# hides from the service: both are refused before anything is installed. A venv made earlier with
# another Python (an older one, or one since removed) is made again with this one.
#
# The venv also gets acryl-datahub[datahub-rest] at --datahub-version (by default the image's
# ACRYL_DATAHUB_VERSION): it is the CLI that recipes naming no version run with
# (DATAHUB_EXECUTOR_DEFAULT_CLI_VERSION=native, the default). --datahub-version '' installs none;
# then every recipe must pin a version, or that setting must name one.
#
#   sudo [env PYTHON=/usr/bin/python3.11] systemd/install.sh [--root DIR] [--package SPEC] [--datahub-version VERSION]
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
min_python="3.10"

# The interpreter's version, its real path and its standard library's, before anything is
# installed: an older Python failed only at the package install, after the venv was made with it.
if ! python_info="$("$python" -c 'import os, sys; print("%d %d" % sys.version_info[:2]); print(sys.executable);
print(os.path.realpath(sys.executable)); print(os.path.realpath(getattr(sys, "base_prefix", sys.prefix)))' 2>/dev/null)"
then
    echo "install.sh: PYTHON=$python cannot be run; set PYTHON= to a Python $min_python or newer" \
         "(such as PYTHON=/usr/bin/python3.11)" >&2
    exit 2
fi
{ read -r python_major python_minor; read -r python_exe; read -r python_real; read -r python_prefix; } <<< "$python_info"
if [ "$python_major" -lt 3 ] || { [ "$python_major" -eq 3 ] && [ "$python_minor" -lt 10 ]; }; then
    echo "install.sh: PYTHON=$python is Python $python_major.$python_minor; the executor needs $min_python or newer:" \
         "install one and run again with PYTHON= naming it (such as PYTHON=/usr/bin/python3.11)" >&2
    exit 2
fi
for path in "$python_real" "$python_prefix"; do
    case "$path/" in
        /home/*|/root/*|/run/user/*)
            echo "install.sh: PYTHON=$python is under a home directory ($path): the unit's ProtectHome=yes hides" \
                 "/home, /root and /run/user from the service, which could not start it; use a Python installed" \
                 "outside them (the system's, or one under /usr/local or /opt) with PYTHON=" >&2
            exit 2 ;;
    esac
done

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
# A venv of another Python is made again (what is installed in it is installed again below): one
# of an older Python would refuse the package at every run, one whose Python is gone cannot run.
if [ -e "$venv/pyvenv.cfg" ]; then
    venv_python="$(readlink -f "$venv/bin/python" || true)"
    if [ "$venv_python" != "$python_real" ]; then
        echo "install.sh: $venv was made with ${venv_python:-a Python no longer there}, not PYTHON=$python" \
             "($python_real): making it again" >&2
        rm -rf "$venv"
    fi
fi
if [ ! -e "$venv/pyvenv.cfg" ]; then
    "$uv" venv --quiet --relocatable --python "$python_exe" "$venv"
fi
"$uv" pip install --quiet --link-mode copy --python "$venv/bin/python" \
    --reinstall-package datahub-remote-executor --upgrade-package datahub-remote-executor "${requirements[@]}"
install -m 0644 "$here/datahub-executor.service" "$root/etc/systemd/system/datahub-executor.service"

if [ -e "$env_file" ]; then
    echo "kept $env_file as it is (it holds your token);" \
         "\`/opt/datahub-executor/venv/bin/datahub-executor env-template\` lists every setting"
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
