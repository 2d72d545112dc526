# syntax=docker/dockerfile:1
# One image for every Esper service; compose runs `esper service NAME` in it.
#   CPU (default):  docker build -t esper:cpu .
#   CUDA:           docker build -t esper:cuda \
#                     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#                     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
# No credentials are baked in: compose passes ESPER_NATS_USER/ESPER_NATS_PASSWORD at run time.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# The wheel index of the torch build: CPU wheels by default, e.g. .../whl/cu128 for CUDA 12.8.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/esper \
    PATH=/opt/esper/bin:$PATH \
    HF_HOME=/var/lib/esper/datasets/huggingface

# CUDA base images carry no Python: install the distribution's (3.12 on Ubuntu 24.04). The service user owns
# /var/lib/esper, so the named volumes mounted below it start out writable.
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/esper \
    && groupadd --system --gid 10001 esper \
    && useradd --system --uid 10001 --gid esper --home-dir /var/lib/esper --shell /usr/sbin/nologin esper \
    && mkdir -p /var/lib/esper/runs /var/lib/esper/datasets \
    && chown -R esper:esper /var/lib/esper

WORKDIR /src
# The runtime part of requirements.lock (deploy/docker/runtime_lock.py leaves the dev tools out), exactly, hashes
# checked; then torch on its own layer (the large one) at the version constraints.txt pins, from the chosen index:
# the lock already satisfies its requirements, so only what a CUDA build adds (its nvidia-* libraries) comes from
# that index too; then Esper with no resolution at all. `pip check` fails the build if anything disagrees.
COPY requirements.lock constraints.txt deploy/docker/runtime_lock.py ./
COPY pyproject.toml ./
RUN python3 runtime_lock.py requirements.lock pyproject.toml > runtime.lock \
    && pip install --require-hashes --no-deps -r runtime.lock
RUN pip install --index-url "${TORCH_INDEX_URL}" -c constraints.txt torch

COPY leyline_schemas ./leyline_schemas
COPY services ./services
RUN pip install --no-deps --no-build-isolation . && pip check && cd / && rm -rf /src

USER esper
WORKDIR /var/lib/esper
# The admin port (/healthz, /readyz, /metrics); compose fixes it with ESPER_ADMIN_PORT.
EXPOSE 8080
CMD ["esper", "--help"]
