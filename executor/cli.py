"""`datahub-executor run | check | healthcheck | settings-table | env-template`."""
from __future__ import annotations

import argparse
import os
import sys

from .undumpable import make_undumpable


def main(argv: list[str] | None = None) -> int:
    # First, before the imports that take most of the start-up: in a container every command the
    # runtime starts (the image's HEALTHCHECK, `docker exec ... check`) holds the container's
    # environment, and tasks of the same uid read a dumpable process's /proc/<pid>/environ.
    make_undumpable()
    from .settings import (SETTINGS, SettingsError, env_template, environment_with_file, load_settings, settings_table,
                           unknown_settings)

    epilog = "settings (environment variables):\n" + "\n".join(
        f"  {s.env:44} {('required' if s.required else s.default or '')}" for s in SETTINGS)
    parser = argparse.ArgumentParser(prog="datahub-executor", epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    env_file_help = ("a KEY=VALUE environment file, as systemd's EnvironmentFile= reads it: the settings and every "
                     "other variable in it (proxy, AWS); the environment wins over it")
    parser.add_argument("--env-file", help=env_file_help)
    # Also after the command (`datahub-executor check --env-file F`), where operators type it too;
    # given only before it, it used to be refused there as an unrecognized argument.
    env_file_after = argparse.ArgumentParser(add_help=False)
    env_file_after.add_argument("--env-file", default=argparse.SUPPRESS, help=env_file_help)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the executor", parents=[env_file_after])
    sub.add_parser("check", help="run the troubleshooting checks and exit", parents=[env_file_after])
    healthcheck = sub.add_parser("healthcheck", help="ask the running executor's /health; exit 0 if healthy (container probes)",
                                 parents=[env_file_after])
    healthcheck.add_argument("--live", action="store_true",
                             help="ask /health/live: fail only on what a restart mends (for checks that restart it)")
    sub.add_parser("settings-table", help="print the settings table (docs/settings.md)")
    sub.add_parser("env-template", help="print an environment file with every setting, for systemd or docker")
    args = parser.parse_args(argv)
    if args.command == "settings-table":
        sys.stdout.write(settings_table())
        return 0
    if args.command == "healthcheck":
        from .healthcheck import run_healthcheck

        try:  # the health address alone: the rest of the file may be (mis)set
            environ = environment_with_file(file=args.env_file)
        except SettingsError as exc:
            print(f"datahub-executor: {exc}", file=sys.stderr)
            return 1  # a probe's "unhealthy" (Docker reserves 2)
        healthy, line = run_healthcheck(live=args.live, environ=environ)
        print(line, file=sys.stdout if healthy else sys.stderr)
        return 0 if healthy else 1
    if args.command == "env-template":
        sys.stdout.write(env_template())
        return 0
    try:
        if args.env_file:
            # The whole file, not only the settings: systemd's EnvironmentFile= gives the service
            # every line of it, and the proxy and AWS variables the docs say to write there reach
            # the clients through the environment. Read for its settings alone, `check` probed
            # direct and without AWS credentials, unlike the service it checks.
            os.environ.update(environment_with_file(file=args.env_file))
        settings = load_settings()
    except SettingsError as exc:
        print(f"datahub-executor: {exc}", file=sys.stderr)
        return 2
    from loguru import logger

    from .operability import configure_logging

    configure_logging(json=settings.log_json, level=settings.log_level)
    for line in unknown_settings():
        logger.warning(line)
    if args.command == "check":
        from .check import run_checks

        return 0 if run_checks(settings) else 1
    from .master import Master

    return Master(settings).run()


if __name__ == "__main__":
    sys.exit(main())
