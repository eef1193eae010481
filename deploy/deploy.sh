#!/bin/sh
# Register everything the deployments need on a Prefect server, in order, in one command:
#   1. the work pools `cpu` and `gpu` (created when missing, never overwritten), the `gpu` pool's
#      concurrency limit set to GPU_COUNT (default 1: one training at a time per GPU);
#   2. every deployment of prefect.yaml (`prefect --no-prompt deploy --all`);
#   3. the automations of deploy/automations/ (each created once, by name): no daily run in 26
#      hours, runs that stopped beating marked Crashed, crashed daily and backfill runs resumed.
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
        # "<id of deployment flow/name>" in a file (an action that runs a deployment): the id that
        # deployment has on this server, created above
        automation=$(python3 -c '
import json, re, sys, yaml
from prefect.client.orchestration import get_client
with open(sys.argv[1]) as file, get_client(sync_client=True) as client:
    text = re.sub(r"<id of deployment ([\w-]+/[\w-]+)>",
                  lambda m: str(client.read_deployment_by_name(m[1]).id), file.read())
print(json.dumps(yaml.safe_load(text)))' "$file")
        prefect automation create --from-json "$automation"
    fi
done
