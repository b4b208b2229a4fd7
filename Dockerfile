# syntax=docker/dockerfile:1
# The DataHub remote executor as a container entrypoint.
#
#   docker build -t datahub-remote-executor .
#   docker run --env-file executor.env -v /path/to/secrets:/mnt/secrets:ro datahub-remote-executor
#
# datahub-executor-init is PID 1 and the executor its only child: it forwards SIGTERM to the master
# alone (which drains, reports and exits 0; a signal to the whole process group would reach running
# tasks directly and cut the drain short) and reaps the orphans that a task's daemonised
# grandchildren leave behind, as tini would. Unlike tini it is not dumpable: tasks run as PID 1's
# uid here, and could otherwise read the container's environment (the token) from /proc/1/environ.
#
# Confinement (docs/operations.md, "Containers and cgroups"): the image runs as the unprivileged
# user 10001, where the container's cgroup filesystem is read-only, so the sandbox runs in mode
# `none` (each task's RSS is watched and the task killed over its limit; pids and cpu are not
# capped). For kernel-enforced memory, pids and cpu limits, run as root with a writable cgroup
# filesystem: `--user 0 --privileged` (or `--cgroupns=private` with /sys/fs/cgroup mounted rw);
# the executor then creates its task cgroups below the container's own cgroup.
# The install logic lives in deploy/docker/install-executor.sh, which the tests run in a fresh
# virtualenv and then start as this image's ENTRYPOINT and CMD would.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The acryl-datahub CLI that recipes naming no version run with (DATAHUB_EXECUTOR_DEFAULT_CLI_VERSION=native).
ARG ACRYL_DATAHUB_VERSION=1.7.0.17
ENV UV_NO_CACHE=1 \
    PIP_NO_CACHE_DIR=1
COPY setup.cfg pyproject.toml README.md /src/
COPY sandbox /src/sandbox
COPY executor /src/executor
COPY vocabulary /src/vocabulary
COPY deploy/docker/install-executor.sh /src/deploy/docker/install-executor.sh
RUN /src/deploy/docker/install-executor.sh /src /opt/datahub-executor "${ACRYL_DATAHUB_VERSION}"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="datahub-remote-executor" \
      org.opencontainers.image.description="Runs DataHub ingestion tasks from an SQS queue, each in its own confined process" \
      org.opencontainers.image.licenses="Apache-2.0"
# util-linux: setpriv, which gives every task a parent-death signal. bash: the task
# launcher's exec wrapper where dash (Debian's /bin/sh, always there) cannot run it. Debian's versions are not pinned: the base image pins the release, and
# pinning a point version breaks the build as soon as the archive moves on.
# Two users: datahub (10001) runs the executor by default; datahub-task (10002, no login shell, no
# home) is the one a root executor (--user 0, the chart's sandbox.privileged) runs its tasks as
# (DATAHUB_EXECUTOR_TASK_USER), so that no task is root. Fixed ids, so that files a task leaves on
# a mounted volume have an owner known outside the image.
# The executor's directories are 0711, not 0750: a root executor's tasks (10002) must pass through
# them to their own work directory and to the virtualenvs built for them, without listing them
# (below, the executor keeps its logs 0700 and gives each task a directory of its own).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends util-linux bash \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 datahub \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/datahub-executor --no-create-home \
               --shell /usr/sbin/nologin datahub \
    && groupadd --gid 10002 datahub-task \
    && useradd --uid 10002 --gid 10002 --home-dir /nonexistent --no-create-home \
               --shell /usr/sbin/nologin datahub-task \
    && install -d -o 10001 -g 10001 -m 0711 /var/lib/datahub-executor /var/cache/datahub-executor \
               /var/cache/datahub-executor/venvs
COPY --from=build /opt/datahub-executor /opt/datahub-executor

ENV PATH=/opt/datahub-executor/bin:$PATH \
    PYTHONUNBUFFERED=1

# Required, no default (docs/settings.md): DATAHUB_GMS_URL (https://<company>.acryl.io/gms),
# DATAHUB_GMS_TOKEN (a Remote Executor access token; pass it with --env-file or a secret, never
# bake it into an image), DATAHUB_EXECUTOR_POOL_ID. Without them the executor exits 2 naming the
# first missing one.
# The seed's settings at their defaults, written here so that `docker inspect` shows them.
# (DL3064 flags the word SECRET: these two are a directory and a size, not secret values.)
# hadolint ignore=DL3064
ENV DATAHUB_EXECUTOR_INGESTION_MAX_WORKERS=4 \
    DATAHUB_EXECUTOR_MONITORS_MAX_WORKERS=10 \
    DATAHUB_EXECUTOR_FILE_SECRET_BASEDIR=/mnt/secrets \
    DATAHUB_EXECUTOR_FILE_SECRET_MAXLEN=1048576 \
    DATAHUB_EXECUTOR_DRAIN_TIMEOUT=300 \
    DATAHUB_EXECUTOR_WORK_DIR=/var/lib/datahub-executor \
    DATAHUB_EXECUTOR_VENV_CACHE_DIR=/var/cache/datahub-executor/venvs \
    DATAHUB_EXECUTOR_DEFAULT_CLI_VERSION=native \
    DATAHUB_EXECUTOR_SANDBOX_MODE=auto
# Differs from the bare-VM default (loopback): probes from outside the container need /health.
ENV DATAHUB_EXECUTOR_HEALTH_ADDRESS=0.0.0.0:9087
EXPOSE 9087

USER 10001:10001
WORKDIR /var/lib/datahub-executor
# A stopped `docker stop` must give the drain its time: use `docker stop -t 360` (drain + a minute to report and exit).
STOPSIGNAL SIGTERM
# --live: /health/live fails only on what a restart mends; orchestrators replace an unhealthy
# container, which would kill its tasks for a refused token too (that fails /health alone).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["datahub-executor", "healthcheck", "--live"]
ENTRYPOINT ["datahub-executor-init", "--"]
CMD ["datahub-executor", "run"]
