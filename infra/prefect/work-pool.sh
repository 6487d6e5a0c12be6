#!/usr/bin/env bash
# Create (or update) the Prefect work pool `genzoo` (type process) and register the deployments of
# prefect.yaml. Needs PREFECT_API_URL set to the Prefect server and the project's venv
# active; runs from the repository root whatever the current directory.
set -euo pipefail
cd "$(dirname "$0")/../.."

: "${PREFECT_API_URL:?set PREFECT_API_URL, e.g. http://127.0.0.1:4200/api}"

prefect --no-prompt work-pool create genzoo --type process --overwrite
# One flow run at a time: a pipeline run holds the project's runs/ folder; later runs wait in the queue.
prefect --no-prompt work-pool set-concurrency-limit genzoo 1
prefect --no-prompt deploy --prefect-file prefect.yaml --all

echo "deployments: genzoo-pipeline/pool, genzoo-train-family/pool, genzoo-judge/pool"
echo "start a worker where the checkout is: GENZOO_DIR=$PWD prefect worker start --pool genzoo"
