# One image for every role of a fairsynth federation: the SuperLink, the SuperNodes, and the
# SuperExec processes that start the ServerApp and the ClientApps (docker-compose.yml).
# It holds fairsynth, Flower 1.41 and the CPU-only build of torch 2.13.0 in /opt/venv.
#
#   docker build -t fairsynth:latest .                      # from the package indexes
#   deploy/build-image.sh                                   # the same, offline when it must be
#
# Build arguments:
#   BASE         the base image: any Debian-like image with python3 (≥ 3.10) and its venv module.
#                Default python:3.11-slim; without a registry, deploy/build-image.sh makes one
#                with debootstrap (`--build-arg BASE=fairsynth-base:bookworm`).
#   TORCH_INDEX  where torch comes from when installing from an index. PyPI's Linux x86_64 torch
#                wheel depends on several GB of CUDA libraries that no role uses, so the default
#                is PyTorch's CPU wheel index; use https://pypi.org/simple on platforms whose
#                PyPI wheel is CPU-only (e.g. linux/arm64).
#
# Offline: when deploy/wheels/ holds wheels (deploy/build-image.sh fills it with `pip download`),
# everything is installed from them with --no-index and no index is contacted. The wheels stay
# in the build stage; the final image holds only the environment. The build fails if a CUDA
# build of torch got in either way.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
COPY deploy/wheels /wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY common common
COPY clients clients
COPY server server
COPY simulations simulations
RUN if ls /wheels/*.whl >/dev/null 2>&1; then \
        /opt/venv/bin/pip install --no-index --find-links /wheels "torch==2.13.0" . ; \
    else \
        /opt/venv/bin/pip install --index-url "${TORCH_INDEX}" "torch==2.13.0" \
        && /opt/venv/bin/pip install . ; \
    fi \
    && /opt/venv/bin/python -c \
        "import torch; assert torch.version.cuda is None, 'a CUDA build of torch got in'"

FROM ${BASE}
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    FLWR_HOME=/tmp/flwr \
    FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1 \
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1

# /state holds the SuperLink's database (a named volume inherits this folder's mode).
RUN mkdir -m 1777 /state

# Any non-root user works (docker-compose.yml runs the services as FAIRSYNTH_UID:FAIRSYNTH_GID so
# that they can read the credentials and data files you created); Flower writes only to
# FLWR_HOME under /tmp.
USER 49999:49999
CMD ["fairsynth", "--help"]
