#!/usr/bin/env sh
# Credentials for docker-compose.yml, in deploy/certs/ (one folder per service, see
# README.md, § Deployment): a CA, TLS certificates for the SuperLink and the SuperNodes,
# the SuperNodes' authentication keys and the SuperExec secrets.
#
#   deploy/generate-certs.sh [--clients 3] [--hostname superlink.example.org] [--force]
#
# Runs `fairsynth deploy-certs` from PATH or ./.venv; without a local install, from the
# fairsynth image (`docker build -t fairsynth:latest .` first).
set -eu
cd "$(dirname "$0")/.."
if command -v fairsynth >/dev/null 2>&1; then
    exec fairsynth deploy-certs --out deploy/certs "$@"
elif [ -x .venv/bin/fairsynth ]; then
    exec .venv/bin/fairsynth deploy-certs --out deploy/certs "$@"
else
    mkdir -p deploy/certs
    exec docker run --rm --user "$(id -u):$(id -g)" --volume "$PWD/deploy/certs:/certs" \
        fairsynth:latest fairsynth deploy-certs --out /certs "$@"
fi
