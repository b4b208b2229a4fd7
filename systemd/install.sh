#!/usr/bin/env bash
# Installs the executor as a systemd service: a virtualenv under /opt/datahub-executor, the unit,
# and /etc/datahub-executor/executor.env from the settings template. Refuses to overwrite an
# existing environment file (it holds the token). --root DIR installs into DIR instead of / (for
# packaging and tests); then nothing is started.
#
#   sudo systemd/install.sh [--root DIR] [--package SPEC]     SPEC: a wheel, a directory or a PyPI name
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="/"
package="$(cd "$here/.." && pwd)"
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root="$2"; shift 2 ;;
        --package) package="$2"; shift 2 ;;
        *) echo "install.sh: unknown argument $1 (use --root DIR, --package SPEC)" >&2; exit 2 ;;
    esac
done
env_file="$root/etc/datahub-executor/executor.env"
if [ -e "$env_file" ]; then
    echo "install.sh: $env_file exists; refusing to overwrite it (it holds your token). Move it away to reinstall." >&2
    exit 1
fi
python="${PYTHON:-python3}"
install -d -m 0755 "$root/opt/datahub-executor" "$root/etc/systemd/system"
install -d -m 0750 "$root/etc/datahub-executor"
"$python" -m venv "$root/opt/datahub-executor/venv"
"$root/opt/datahub-executor/venv/bin/python" -m pip install --quiet --upgrade pip
"$root/opt/datahub-executor/venv/bin/python" -m pip install --quiet "$package"
install -m 0644 "$here/datahub-executor.service" "$root/etc/systemd/system/datahub-executor.service"
umask 077
"$root/opt/datahub-executor/venv/bin/datahub-executor" env-template > "$env_file"
chmod 0600 "$env_file"
echo "installed into $root; edit $env_file (DATAHUB_GMS_URL, DATAHUB_GMS_TOKEN, DATAHUB_EXECUTOR_POOL_ID)"
if [ "$root" = "/" ]; then
    systemctl daemon-reload
    echo "then: systemctl enable --now datahub-executor && journalctl -u datahub-executor -f"
fi
