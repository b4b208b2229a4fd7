# shellcheck shell=bash disable=SC2154  # $here comes from the script that sources this
# Sourced by bin/bootstrap and bin/install-system-deps (needs $here, the checkout). What a first run
# installs, one line per step with its duration; each tool's own output goes to a log under
# .cache/setup/ and is summarised (a count), or its tail is shown when the step fails.

python="${PYTHON:-python3}"
setup_logs="$here/.cache/setup"

setup_say() {
    printf '[setup] %s\n' "$*" >&2
}

_setup_clock() {  # tenths of a second; EPOCHREALTIME's separator follows the locale, hence the strip
    local t="${EPOCHREALTIME//[!0-9]/}"
    echo $((t / 100000))
}

setup_duration() {  # tenths since $1, as "12.3 s"
    local d=$(($(_setup_clock) - $1))
    echo "$((d / 10)).$((d % 10)) s"
}

# setup_step NAME LABEL SUMMARISER -- COMMAND...
# Runs COMMAND with its output in .cache/setup/NAME.log and prints "[setup] LABEL ... SUMMARY (1.2 s)"
# on one line (started before, finished after, so a slow step shows what it is doing). SUMMARISER
# reads the log and prints the summary. On failure: the log's tail, its path, and exit with the code.
setup_step() {
    local name="$1" label="$2" summarise="$3" started code
    shift 4
    mkdir -p "$setup_logs"
    local log="$setup_logs/$name.log"
    printf '[setup] %s ... ' "$label" >&2
    started="$(_setup_clock)"
    # stdin from /dev/null: a tool that wants to ask something fails visibly instead of waiting unseen.
    if "$@" </dev/null >"$log" 2>&1; then
        printf '%s (%s)\n' "$("$summarise" "$log")" "$(setup_duration "$started")" >&2
        return 0
    else
        code=$?
    fi
    printf 'FAILED after %s (exit %d); the end of its output:\n' "$(setup_duration "$started")" "$code" >&2
    tail -n 25 "$log" | sed 's/^/    /' >&2
    setup_say "full output: $log"
    exit "$code"
}

summarise_done() {
    echo "done"
}

summarise_apt_update() {  # "Fetched 9,143 kB in 2s (4,110 kB/s)"
    local fetched
    fetched="$(sed -n 's/^Fetched \([0-9.,]* [kMG]\?B\) in.*/\1/p' "$1" | tail -n 1)"
    if [ -n "$fetched" ]; then echo "fetched $fetched"; else echo "done"; fi
}

summarise_apt_install() {  # "0 upgraded, 5 newly installed, 0 to remove and 3 not upgraded."
    local count
    count="$(sed -n 's/.* \([0-9]\+\) newly installed.*/\1/p' "$1" | tail -n 1)"
    echo "${count:-?} packages installed, dependencies included"
}

summarise_pip_install() {  # "Successfully installed uv-0.9.5"
    local line
    line="$(sed -n 's/^Successfully installed //p' "$1" | tail -n 1)"
    if [ -n "$line" ]; then echo "installed $line"; else echo "already installed"; fi
}

summarise_uv_install() {  # "Resolved 152 packages in 2.49s", "Installed 152 packages in 1.21s"
    local resolved installed
    resolved="$(sed -n 's/^Resolved \([0-9]\+\) package.*/\1/p' "$1" | tail -n 1)"
    installed="$(sed -n 's/^Installed \([0-9]\+\) package.*/\1/p' "$1" | tail -n 1)"
    if [ -n "$installed" ]; then
        echo "$installed of ${resolved:-?} packages installed"
    else
        echo "all ${resolved:-?} packages already installed"
    fi
}

# The Debian packages missing here, one name a line. "run": what the product uses at run time:
# util-linux's setpriv gives every task a parent-death signal, and python3-venv lets Debian's
# python3 create .venv (bash, the sandbox's exec wrapper, is what runs this script). "tests": on
# top, what the tests drive for real: chromium renders the web page, systemd's systemd-analyze
# verifies the unit, and a system python3 that can create virtualenvs starts the container
# image's entrypoint as the image does.
setup_missing_debian_packages() {
    local need=()
    command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
    if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        # Only Debian's own python3 is fixed by the package; another Python fails later, in the
        # virtualenv step, with its own message.
        case "$(command -v "$python" || echo /usr/bin/python3)" in
            /usr/bin/*|/bin/*) need+=(python3-venv) ;;
        esac
    fi
    if [ "$1" = tests ]; then
        command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
        command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
        /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
    fi
    [ ${#need[@]} -eq 0 ] || printf '%s\n' "${need[@]}" | sort -u
}

# Installs the named Debian packages with apt-get, as root or through sudo.
setup_install_debian_packages() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            setup_say "missing Debian packages: $*; installing them needs root, and sudo is not installed."
            setup_say "As root, run: apt-get update && apt-get install --no-install-recommends $*   then run this again."
            exit 1
        fi
        if ! sudo -n true 2>/dev/null; then
            setup_say "installing Debian packages ($*) needs root: sudo asks for your password"
            sudo -v
        fi
        sudo=(sudo)
    fi
    # The lock timeout waits for a running unattended-upgrade instead of failing at once.
    local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300)
    setup_step apt-update "updating the Debian package lists" summarise_apt_update -- "${apt[@]}" update
    setup_step apt-install "installing Debian packages: $*" summarise_apt_install -- \
        "${apt[@]}" install -y --no-install-recommends "$@"
}
