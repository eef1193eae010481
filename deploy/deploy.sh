#!/bin/sh
# Register everything the deployments need on a Prefect server, in order, in one command:
#   1. the work pools `cpu` and `gpu` (created when missing, never overwritten), the `gpu` pool's
#      concurrency limit set to GPU_COUNT (default 1: one training at a time per GPU);
#   2. every deployment of prefect.yaml (`prefect --no-prompt deploy --all`);
#   3. the automations of deploy/automations/ (each created once, by name).
# Run it from anywhere with PREFECT_API_URL (and PREFECT_API_AUTH_STRING when the server has
# basic auth) set:   GPU_COUNT=2 deploy/deploy.sh
set -eu
cd "$(dirname "$0")/.."
gpu_count=${GPU_COUNT:-1}
case $gpu_count in
    '' | *[!0-9]* | 0) echo "deploy.sh: GPU_COUNT=$gpu_count must be a whole number >= 1 (GPUs behind pool gpu)" >&2; exit 2 ;;
esac
for pool in cpu gpu; do
    prefect work-pool inspect "$pool" >/dev/null 2>&1 || prefect work-pool create "$pool" --type process
done
prefect work-pool set-concurrency-limit gpu "$gpu_count"
prefect --no-prompt deploy --all
for file in deploy/automations/*.yaml; do
    name=$(sed -n 's/^name: *//p' "$file" | head -n 1)
    if python3 -c 'import sys; from prefect.automations import Automation; Automation.read(name=sys.argv[1])' "$name" >/dev/null 2>&1; then
        echo "automation '$name' exists; kept"
    else
        prefect automation create --from-file "$file"
    fi
done
