# syntax=docker/dockerfile:1
# fleetwave controller image: `fleetwave run` (standalone) by default,
# `fleetwave operator` in Kubernetes.
#
#   docker build -t fleetwave:dev .
#   docker run --rm -p 8080:8080 -v fleetwave-data:/data \
#     -e FLEETWAVE_BROKER=mqtt://broker.example:1883 fleetwave:dev
#
# Two stages: the builder turns fleetwave and every dependency into wheels
# (pygit2 and psycopg[binary] wheels carry libgit2 and libpq); the final stage
# installs those wheels and nothing else, so it has no compiler, no build
# headers and no pip cache.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Only for dependencies without a wheel for this platform; never in the final stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller ./controller
RUN pip wheel --wheel-dir /wheels .

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
    pip install --no-index --find-links=/wheels fleetwave \
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
