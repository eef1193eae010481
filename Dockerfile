# syntax=docker/dockerfile:1
# One project, two images:
#   docker build --target cpu -t cdd-forecast:cpu .   # server, migrate, deploy, CPU worker
#   docker build --target gpu -t cdd-forecast:gpu .   # GPU worker: TensorFlow + CUDA from PyPI
# The gpu image carries CUDA and cuDNN as pip wheels (tensorflow[and-cuda]); the host needs only
# the NVIDIA driver and the NVIDIA Container Toolkit. Both run as the unprivileged user `cddf`.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Dependencies first (cached while only the code changes), then the project itself.
FROM base AS build-cpu
ARG TENSORFLOW_VERSION=2.21.0
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
RUN mkdir forecaster db flows migrations \
    && pip install "tensorflow==${TENSORFLOW_VERSION}" . \
    && pip uninstall -y cdd-forecast
COPY forecaster ./forecaster
COPY db ./db
COPY flows ./flows
COPY migrations ./migrations
RUN pip install --no-deps . && cdd-forecast --help >/dev/null

FROM build-cpu AS build-gpu
ARG TENSORFLOW_VERSION=2.21.0
RUN pip install "tensorflow[and-cuda]==${TENSORFLOW_VERSION}"

# The runtime: no compilers, no pip cache, the code read-only to the user that runs it.
# /app holds the source and prefect.yaml too: `prefect deploy` runs there and process workers
# load the flows' entrypoints (flows/<name>.py) from there.
FROM base AS runtime
RUN groupadd --system --gid 10001 cddf \
    && useradd --system --uid 10001 --gid cddf --create-home --home-dir /home/cddf cddf \
    && mkdir -p /var/lib/cddf/charts \
    && chown cddf:cddf /var/lib/cddf/charts
WORKDIR /app
COPY pyproject.toml README.md prefect.yaml ./
COPY forecaster ./forecaster
COPY db ./db
COPY flows ./flows
COPY migrations ./migrations
ENV PREFECT_HOME=/home/cddf/.prefect \
    CDDF_CHART_DIR=/var/lib/cddf/charts
USER cddf
CMD ["cdd-forecast", "--help"]

FROM runtime AS cpu
COPY --from=build-cpu /opt/venv /opt/venv

FROM runtime AS gpu
COPY --from=build-gpu /opt/venv /opt/venv
