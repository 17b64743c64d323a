# syntax=docker/dockerfile:1
# fleetwave controller image: `fleetwave run` (standalone) by default,
# `fleetwave operator` in Kubernetes.
#
#   docker build -t fleetwave:dev .
#   docker run --rm -p 8080:8080 -v fleetwave-data:/data \
#     -e FLEETWAVE_BROKER=mqtts://broker.example:8883 \
#     -e FLEETWAVE_BROKER_USERNAME=fleetwave -e FLEETWAVE_BROKER_PASSWORD=… fleetwave:dev
#
# Two stages: the builder fetches every dependency as a wheel, each checked against the
# SHA-256 in requirements.lock (pygit2 and psycopg[binary] wheels carry libgit2 and libpq;
# binary wheels only, so no compiler runs), and builds fleetwave's own wheel with the
# hash-pinned backend of build-requirements.lock. The final stage installs those wheels
# with --require-hashes, then fleetwave with --no-deps: nothing unpinned, no compiler, no
# build headers, no pip cache.
#
# Refresh the locks after changing dependencies in pyproject.toml:
#   uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes -o requirements.lock
#   uv pip compile build-requirements.in --universal --python-version 3.11 --generate-hashes --no-annotate -o build-requirements.lock
#
# The base image is pinned by digest (a tag can be re-pushed, a digest cannot). No registry
# is reachable where this file was written, so the digest was taken from public Dockerfiles
# pinning python:3.11.11-slim-bookworm and could not be verified here. Check and refresh it:
#   docker buildx imagetools inspect python:3.11.11-slim-bookworm   # the index digest
# and put the new digest (and tag) below; builder and final stage share it.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements.lock build-requirements.lock pyproject.toml README.md ./
COPY controller ./controller
RUN pip wheel --require-hashes --only-binary=:all: --wheel-dir /wheels -r requirements.lock \
 && pip install --require-hashes --only-binary=:all: -r build-requirements.lock \
 && pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS final
ARG FLEETWAVE_UID=10001
LABEL org.opencontainers.image.title="fleetwave" \
      org.opencontainers.image.description="GitOps reconciler that rolls software versions out to device fleets over MQTT" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/data \
    FLEETWAVE_LISTEN=0.0.0.0:8080 \
    FLEETWAVE_STORE=sqlite:////data/fleetwave.db
# The wheels are bind-mounted from the builder, so they never become a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=bind,source=requirements.lock,target=/tmp/requirements.lock \
    pip install --no-index --find-links=/wheels --require-hashes -r /tmp/requirements.lock \
 && pip install --no-index --find-links=/wheels --no-deps fleetwave \
 && groupadd --system --gid "${FLEETWAVE_UID}" fleetwave \
 && useradd --system --uid "${FLEETWAVE_UID}" --gid "${FLEETWAVE_UID}" \
      --home-dir /data --no-create-home --shell /usr/sbin/nologin fleetwave \
 && mkdir -p /data \
 && chown "${FLEETWAVE_UID}:${FLEETWAVE_UID}" /data
WORKDIR /data
# SQLite database, a local rollouts folder (./rollouts) and git checkouts.
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8080
# Liveness of the HTTP API, on the port FLEETWAVE_LISTEN names; no curl in the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('FLEETWAVE_LISTEN', '0.0.0.0:8080').rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]
ENTRYPOINT ["fleetwave"]
CMD ["run"]
