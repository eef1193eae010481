# One project, two images:
#   docker build --target cpu -t cdd-forecast:cpu .   # server, migrate, deploy, CPU worker
#   docker build --target gpu -t cdd-forecast:gpu .   # GPU worker: TensorFlow + CUDA from PyPI
# The gpu image carries CUDA and cuDNN as pip wheels (tensorflow[and-cuda]); the host needs only
# the NVIDIA driver and the NVIDIA Container Toolkit. Both run as the unprivileged user `cddf`.
#
# No `# syntax=` line (it would fetch a frontend from Docker Hub), and the GPU stages come after
# the `cpu` target: the legacy builder (no BuildKit) builds every stage up to its target in file
# order, so `--target cpu` never downloads the CUDA wheels. Where Docker Hub cannot be reached,
# pass any Debian bookworm image with python3 as PYTHON_IMAGE (docs/deploy.md builds one with
# debootstrap from Debian's packages). Corporate CA certificates: see deploy/ca/README.md.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
COPY deploy/ca/ /etc/cddf-ca/
RUN set -e; \
    if ls /etc/cddf-ca/*.crt >/dev/null 2>&1; then \
        base=/etc/ssl/certs/ca-certificates.crt; \
        if [ -f "$base" ]; then cat "$base" > /etc/cddf-ca/bundle.pem; fi; \
        cat /etc/cddf-ca/*.crt >> /etc/cddf-ca/bundle.pem; \
    fi
ENV PIP_CERT_IF_PRESENT=/etc/cddf-ca/bundle.pem

# Dependencies first (cached while only the code changes), then the project itself.
FROM base AS build-cpu
ARG TENSORFLOW_VERSION=2.21.0
RUN python3 -m venv /opt/venv
WORKDIR /src
# (an empty README.md stands in for the real one, so that editing it keeps this layer)
COPY pyproject.toml ./
RUN if [ -f "$PIP_CERT_IF_PRESENT" ]; then export PIP_CERT="$PIP_CERT_IF_PRESENT"; fi \
    && mkdir forecaster cdd db flows migrations settings && touch README.md \
    && pip install "tensorflow==${TENSORFLOW_VERSION}" . \
    && pip uninstall -y cdd-forecast
COPY README.md ./
COPY forecaster ./forecaster
COPY cdd ./cdd
COPY db ./db
COPY flows ./flows
COPY migrations ./migrations
COPY settings ./settings
# (pip fetches the build backend, setuptools, for this install too: it needs the CA as well)
RUN if [ -f "$PIP_CERT_IF_PRESENT" ]; then export PIP_CERT="$PIP_CERT_IF_PRESENT"; fi \
    && pip install --no-deps . && cdd-forecast --help >/dev/null

# The runtime: no compilers, no pip cache, the code read-only to the user that runs it.
# /app holds the source and prefect.yaml too: `prefect deploy` runs there and process workers
# load the flows' entrypoints (flows/<name>.py) from there. The Prefect server writes its UI
# (with the API URL filled in) to PREFECT_SERVER_UI_STATIC_DIRECTORY at start: it must be
# writable by `cddf`, or the UI answers 404.
FROM base AS runtime
RUN groupadd --system --gid 10001 cddf \
    && useradd --system --uid 10001 --gid cddf --create-home --home-dir /home/cddf cddf \
    && mkdir -p /var/lib/cddf/charts /var/lib/cddf/ui \
    && chown cddf:cddf /var/lib/cddf/charts /var/lib/cddf/ui
WORKDIR /app
COPY pyproject.toml README.md prefect.yaml ./
COPY deploy ./deploy
COPY forecaster ./forecaster
COPY cdd ./cdd
COPY db ./db
COPY flows ./flows
COPY migrations ./migrations
COPY settings ./settings
ENV PREFECT_HOME=/home/cddf/.prefect \
    PREFECT_SERVER_UI_STATIC_DIRECTORY=/var/lib/cddf/ui \
    CDDF_CHART_DIR=/var/lib/cddf/charts
USER cddf
CMD ["cdd-forecast", "--help"]

FROM runtime AS cpu
COPY --from=build-cpu /opt/venv /opt/venv

# GPU stages last: see the note at the top.
FROM build-cpu AS build-gpu
ARG TENSORFLOW_VERSION=2.21.0
RUN if [ -f "$PIP_CERT_IF_PRESENT" ]; then export PIP_CERT="$PIP_CERT_IF_PRESENT"; fi \
    && pip install "tensorflow[and-cuda]==${TENSORFLOW_VERSION}"

FROM runtime AS gpu
COPY --from=build-gpu /opt/venv /opt/venv
