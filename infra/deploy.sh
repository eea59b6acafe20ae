#!/usr/bin/env bash
# Provision one environment of the presence service and deploy its code.
#
#   infra/deploy.sh -g <resource-group> -l <location> -e <environment> -c <graph-client-id>
#
# The Graph client secret is read from the GRAPH_CLIENT_SECRET environment
# variable (never from the command line, where it would land in shell history
# and the process list). Without it the Key Vault secret is left as it is;
# see docs/deployment.md.
#
# Needs: az (logged in: az login), python3. Run from anywhere.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: infra/deploy.sh -g RESOURCE_GROUP -l LOCATION -e ENVIRONMENT -c GRAPH_CLIENT_ID [-m MAX_INSTANCES] [--skip-code]

  -g, --resource-group   resource group to create or update
  -l, --location         Azure region offering Flex Consumption
                         (az functionapp list-flexconsumption-locations -o table)
  -e, --environment      environment name (dev, test, prod...), 1-16 characters
  -c, --graph-client-id  application (client) id of the Entra app with Presence.Read.All
  -m, --max-instances    maximumInstanceCount of the plan (40-1000, default 100)
      --skip-code        provision only; do not package and deploy the code
  -h, --help             this text

Environment:
  GRAPH_CLIENT_SECRET    client secret of that app, written to Key Vault (optional)
USAGE
}

die() {
  echo "deploy.sh: $*" >&2
  exit 1
}

resource_group=""
location=""
environment_name=""
graph_client_id=""
max_instances="100"
skip_code="false"

# The value of option $1, which must be present.
value_of() {
  [[ $# -ge 2 && -n "$2" ]] || { usage >&2; die "$1 needs a value"; }
  printf '%s' "$2"
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -g | --resource-group) resource_group="$(value_of "$@")"; shift 2 ;;
    -l | --location) location="$(value_of "$@")"; shift 2 ;;
    -e | --environment) environment_name="$(value_of "$@")"; shift 2 ;;
    -c | --graph-client-id) graph_client_id="$(value_of "$@")"; shift 2 ;;
    -m | --max-instances) max_instances="$(value_of "$@")"; shift 2 ;;
    --skip-code) skip_code="true"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

[[ -n "$resource_group" ]] || { usage >&2; die "missing -g RESOURCE_GROUP"; }
[[ -n "$location" ]] || { usage >&2; die "missing -l LOCATION"; }
[[ -n "$environment_name" ]] || { usage >&2; die "missing -e ENVIRONMENT"; }
[[ -n "$graph_client_id" ]] || { usage >&2; die "missing -c GRAPH_CLIENT_ID"; }
[[ "$max_instances" =~ ^[0-9]+$ ]] || die "-m must be a number, got: $max_instances"

command -v az >/dev/null || die "the Azure CLI (az) is not installed"
command -v python3 >/dev/null || die "python3 is needed to build the package"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work_dir="$(mktemp -d)"
trap 'rm -rf "$work_dir"' EXIT

echo "== resource group $resource_group ($location)"
az group create --name "$resource_group" --location "$location" --output none

# Parameters go through a file only this user can read: a secret passed as
# --parameters name=value would be visible in the process list.
params_file="$work_dir/parameters.json"
(
  umask 077
  GRAPH_CLIENT_ID="$graph_client_id" \
    ENVIRONMENT_NAME="$environment_name" \
    LOCATION="$location" \
    MAX_INSTANCES="$max_instances" \
    python3 - "$params_file" <<'PY'
import json
import os
import sys

parameters = {
    "location": {"value": os.environ["LOCATION"]},
    "environmentName": {"value": os.environ["ENVIRONMENT_NAME"]},
    "graphClientId": {"value": os.environ["GRAPH_CLIENT_ID"]},
    "maximumInstanceCount": {"value": int(os.environ["MAX_INSTANCES"])},
}
secret = os.environ.get("GRAPH_CLIENT_SECRET", "")
if secret:
    parameters["graphClientSecret"] = {"value": secret}
document = {
    "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
    "contentVersion": "1.0.0.0",
    "parameters": parameters,
}
with open(sys.argv[1], "w", encoding="utf-8") as handle:
    json.dump(document, handle)
PY
)
if [[ -z "${GRAPH_CLIENT_SECRET:-}" ]]; then
  echo "   GRAPH_CLIENT_SECRET is not set: the Key Vault secret is not written" >&2
fi

deployment_name="presence-${environment_name}-$(date -u +%Y%m%d%H%M%S)"
echo "== deploying infra/main.bicep as $deployment_name"
az deployment group create \
  --resource-group "$resource_group" \
  --name "$deployment_name" \
  --template-file "$repo_root/infra/main.bicep" \
  --parameters "@$params_file" \
  --output none

output() {
  az deployment group show \
    --resource-group "$resource_group" \
    --name "$deployment_name" \
    --query "properties.outputs.$1.value" \
    --output tsv
}
app_name="$(output functionAppName)"
host_name="$(output functionAppHostName)"
topic_endpoint="$(output eventGridTopicEndpoint)"
storage_name="$(output storageAccountName)"
key_vault_name="$(output keyVaultName)"
rm -f "$params_file"

if [[ "$skip_code" != "true" ]]; then
  # Only what the app runs: no tests, no dev tools, no virtualenv, no
  # node_modules, no caches. Dependencies are installed by the remote build
  # from requirements.txt.
  package="$work_dir/app.zip"
  echo "== packaging $package"
  python3 - "$repo_root" "$package" <<'PY'
import sys
import zipfile
from pathlib import Path

root = Path(sys.argv[1])
files = ["function_app.py", "host.json", "requirements.txt"]
folders = ["functions", "shared"]
with zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_DEFLATED) as archive:
    for name in files:
        archive.write(root / name, name)
    for folder in folders:
        for path in sorted((root / folder).rglob("*")):
            if path.is_dir() or "__pycache__" in path.parts:
                continue
            if path.suffix in {".pyc", ".pyo"}:
                continue
            archive.write(path, path.relative_to(root).as_posix())
    print(f"   {len(archive.namelist())} files")
PY

  # On a Flex Consumption app this command publishes through the app's
  # one-deploy endpoint into the deployment container; --build-remote runs
  # pip install -r requirements.txt on the platform, for Linux, so nothing
  # built on this machine is shipped.
  echo "== deploying code to $app_name (remote build)"
  az functionapp deployment source config-zip \
    --resource-group "$resource_group" \
    --name "$app_name" \
    --src "$package" \
    --build-remote true \
    --timeout 900
fi

cat <<DONE

== done
Function app:     $app_name
API base URL:     https://$host_name/api
Health (no key):  https://$host_name/api/health
Event Grid topic: $topic_endpoint
Storage account:  $storage_name
Key Vault:        $key_vault_name

The subscription API needs a function key (header x-functions-key, or ?code=):
  az functionapp keys list --resource-group $resource_group --name $app_name --query functionKeys.default --output tsv
DONE
