# One image for every role of a fairsynth federation: the SuperLink, the SuperNodes, and the
# SuperExec processes that start the ServerApp and the ClientApps (docker-compose.yml).
# It holds fairsynth, Flower 1.41 and the CPU-only build of torch 2.13.0.
#
#   docker build -t fairsynth:latest .
#
# torch comes from the PyTorch CPU wheel index: PyPI's Linux x86_64 wheel of torch depends on
# the CUDA libraries (several GB) that no role here uses. Build with
# `--build-arg TORCH_INDEX=https://pypi.org/simple` on platforms whose PyPI wheel is CPU-only
# (e.g. linux/arm64). The project's own requirement `torch==2.13.0` is then already met (a
# local version such as 2.13.0+cpu satisfies it), so pip does not fetch torch again; the last
# step fails the build if a CUDA build got in anyway.
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    FLWR_HOME=/tmp/flwr \
    FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1 \
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1

RUN pip install --index-url "${TORCH_INDEX}" "torch==2.13.0"

WORKDIR /opt/fairsynth
COPY pyproject.toml README.md ./
COPY common common
COPY clients clients
COPY server server
COPY simulations simulations
RUN pip install . \
    && python -c "import torch; assert torch.version.cuda is None, 'a CUDA build of torch got in'"

# /state holds the SuperLink's database (a named volume inherits this folder's mode).
RUN mkdir -m 1777 /state

# Any non-root user works (docker-compose.yml runs the services as FAIRSYNTH_UID:FAIRSYNTH_GID so
# that they can read the credentials and data files you created); Flower writes only to
# FLWR_HOME under /tmp.
USER 49999:49999
CMD ["fairsynth", "--help"]
