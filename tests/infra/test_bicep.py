"""Static checks of the Bicep templates under ``infra/`` and of ``deploy.sh``.

The Bicep compiler is not available here, so these tests are no substitute for
``az bicep build``: pycep-parser checks syntax against its own grammar, and the
rest walks its parse tree (or, for comments, the text) to hold the templates to
the app's contract (``shared/settings.py``) and to the security rules: identity
only, no shared keys, no secrets in outputs, guid()-named role assignments.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import zipfile
from functools import cache
from pathlib import Path
from typing import Any, cast

import pytest
from lark.exceptions import LarkError
from pycep import BicepParser

from shared.settings import Settings

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
MAIN = INFRA / "main.bicep"
MODULES = INFRA / "modules"
FUNCTION_APP = MODULES / "functionapp.bicep"
DEPLOY = INFRA / "deploy.sh"

BICEP_FILES = sorted([MAIN, *MODULES.glob("*.bicep")])

# What the code reads in production (shared/settings.py, functions/polling.py).
PRODUCTION_SETTINGS = {
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "EVENTGRID_TOPIC_ENDPOINT",
    "GRAPH_CLIENT_ID",
    "GRAPH_CLIENT_SECRET",
    "POLL_SCHEDULE",
    "OUTBOX_SWEEP_SCHEDULE",
    "IDEMPOTENCY_RETENTION_HOURS",
}

# Built-in role definition ids the app's identity must hold.
REQUIRED_ROLES = {
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "d5a91429-5739-47e2-a06b-3470a27159e7": "EventGrid Data Sender",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
}

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@cache
def parse(path: Path) -> dict[str, Any]:
    return cast(dict[str, Any], BicepParser().parse(file_path=path))


def resources_of_type(tree: dict[str, Any], type_: str) -> dict[str, Any]:
    return {
        name: resource
        for name, resource in tree.get("resources", {}).items()
        if resource["type"] == type_
    }


def walk(node: Any) -> Any:
    """Every value in a parse tree, depth first."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def app_settings() -> dict[str, Any]:
    configs = [
        resource["config"]
        for resource in resources_of_type(
            parse(FUNCTION_APP), "Microsoft.Web/sites/config"
        ).values()
        if resource["config"]["name"] == "appsettings"
    ]
    assert len(configs) == 1, "functionapp.bicep sets app settings exactly once"
    properties = configs[0]["properties"]
    # A plain object literal, so that these checks see every name; union() or
    # a variable would hide them from the parse tree.
    assert isinstance(properties, dict) and "function" not in properties
    return properties


# --- syntax -----------------------------------------------------------------


def test_there_are_templates_to_check() -> None:
    assert MAIN.exists()
    assert len(BICEP_FILES) >= 7


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.name)
def test_every_bicep_file_parses(path: Path) -> None:
    tree = parse(path)
    assert tree.get("resources") or tree.get("modules")


def test_the_parser_rejects_broken_bicep(tmp_path: Path) -> None:
    """The syntax gate above can fail: an unclosed object is refused."""
    broken = tmp_path / "broken.bicep"
    good = FUNCTION_APP.read_text(encoding="utf-8")
    broken.write_text(good.replace("  properties: {", "  properties: ", 1))
    with pytest.raises(LarkError):
        BicepParser().parse(file_path=broken)


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.name)
def test_indentation_is_two_spaces(path: Path) -> None:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        assert "\t" not in line, f"{path.name}:{number} has a tab"
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0, f"{path.name}:{number} is not indented by 2s"


# --- main.bicep ----------------------------------------------------------------


def test_main_targets_a_resource_group() -> None:
    assert parse(MAIN)["globals"]["scope"]["value"] == "resourceGroup"


def test_main_references_every_module_file_and_only_existing_ones() -> None:
    referenced = {
        (MAIN.parent / module["detail"]["path"]).resolve()
        for module in parse(MAIN)["modules"].values()
    }
    on_disk = {path.resolve() for path in MODULES.glob("*.bicep")}
    assert referenced == on_disk


def test_main_parameters() -> None:
    parameters = parse(MAIN)["parameters"]
    for name in (
        "location",
        "environmentName",
        "graphClientId",
        "graphClientSecret",
        "maximumInstanceCount",
    ):
        assert name in parameters, name
    assert parameters["maximumInstanceCount"]["default"] == 100
    assert parameters["graphClientSecret"]["default"] == ""
    assert {"type": "secure"} in parameters["graphClientSecret"]["decorators"]


def test_main_outputs_names_and_endpoints() -> None:
    outputs = parse(MAIN)["outputs"]
    assert {
        "functionAppName",
        "functionAppHostName",
        "eventGridTopicEndpoint",
        "storageAccountName",
    } <= set(outputs)


def test_example_parameters_match_main() -> None:
    document = json.loads((INFRA / "main.parameters.json").read_text("utf-8"))
    given = set(document["parameters"])
    declared = parse(MAIN)["parameters"]
    assert given <= set(declared)
    required = {name for name, p in declared.items() if "default" not in p}
    assert required <= given
    # An example file is committed: it must not carry a secret.
    assert "graphClientSecret" not in given


# --- secrets -------------------------------------------------------------------


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.name)
def test_secret_parameters_are_secure_and_never_output(path: Path) -> None:
    tree = parse(path)
    secure = set()
    for name, parameter in tree.get("parameters", {}).items():
        # A secret's *name* (graphClientSecretName) is not itself secret.
        if re.search(r"secret|password", name, re.IGNORECASE) and not name.endswith(
            "Name"
        ):
            assert {"type": "secure"} in parameter["decorators"], name
        if {"type": "secure"} in parameter["decorators"]:
            secure.add(name)
    for name, output in tree.get("outputs", {}).items():
        assert not re.search(r"secret|password", name, re.IGNORECASE), name
        mentioned = json.dumps(output["value"])
        for parameter in secure:
            assert parameter not in mentioned, f"output {name} uses {parameter}"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.name)
def test_no_keys_are_listed(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"\blist(Keys|ConnectionStrings|AccountSas)\b", text)
    assert "AccountKey" not in text
    assert "SharedAccessKey" not in text


def test_storage_disallows_shared_keys() -> None:
    accounts = resources_of_type(
        parse(MODULES / "storage.bicep"), "Microsoft.Storage/storageAccounts"
    )
    (account,) = accounts.values()
    properties = account["config"]["properties"]
    assert properties["allowSharedKeyAccess"] is False
    assert properties["allowBlobPublicAccess"] is False


def test_storage_creates_the_apps_queues_and_tables() -> None:
    variables = parse(MODULES / "storage.bicep")["variables"]
    assert set(variables["queueNames"]["value"]) == {
        "subscription-commands",
        "subscription-commands-poison",
        "shard-polls",
        "shard-polls-poison",
    }
    assert set(variables["tableNames"]["value"]) == {
        "subscriptions",
        "tenants",
        "presence",
        "idempotency",
    }


def test_event_grid_topic_takes_cloud_events_and_no_keys() -> None:
    topics = resources_of_type(
        parse(MODULES / "eventgrid.bicep"), "Microsoft.EventGrid/topics"
    )
    (topic,) = topics.values()
    properties = topic["config"]["properties"]
    assert properties["inputSchema"] == "CloudEventSchemaV1_0"
    assert properties["disableLocalAuth"] is True


def test_key_vault_uses_rbac() -> None:
    vaults = resources_of_type(
        parse(MODULES / "keyvault.bicep"), "Microsoft.KeyVault/vaults"
    )
    (vault,) = vaults.values()
    assert vault["config"]["properties"]["enableRbacAuthorization"] is True


# --- function app --------------------------------------------------------------


def test_app_settings_include_every_production_setting() -> None:
    missing = PRODUCTION_SETTINGS - set(app_settings())
    assert not missing, f"app settings lack {sorted(missing)}"


def test_app_settings_hold_no_key_or_connection_string() -> None:
    settings = app_settings()
    # The bare name would be read as a connection string (shared/settings.py).
    assert "AzureWebJobsStorage" not in settings
    assert "EVENTGRID_TOPIC_KEY" not in settings
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    for name, value in settings.items():
        text = json.dumps(value)
        assert "AccountKey" not in text, name
        assert "SharedAccessSignature" not in text, name
    assert settings["GRAPH_CLIENT_SECRET"].startswith("@Microsoft.KeyVault(")


def test_app_settings_match_the_schedules_the_code_defaults_to() -> None:
    settings = app_settings()
    assert settings["POLL_SCHEDULE"] == "*/30 * * * * *"
    assert settings["OUTBOX_SWEEP_SCHEDULE"] == "15 * * * * *"


def test_the_app_reads_these_settings_as_a_managed_identity_deployment() -> None:
    """Feed the names the template sets to the app's own settings reader."""
    environ = {
        name: value if isinstance(value, str) else f"<{name}>"
        for name, value in app_settings().items()
    }
    # Parameter references appear as bare names; give the URIs real shapes.
    environ["EVENTGRID_TOPIC_ENDPOINT"] = "https://topic.example/api/events"
    settings = Settings.from_environ(environ)
    assert settings.storage.connection_string is None
    assert settings.storage.queue_service_uri
    assert settings.storage.table_service_uri
    assert settings.storage.managed_identity_client_id
    assert settings.event_grid.topic_key is None
    assert settings.event_grid.topic_endpoint
    assert settings.graph.client_id
    assert settings.graph.client_secret


def test_function_app_is_flex_consumption_python_311() -> None:
    tree = parse(FUNCTION_APP)
    (plan,) = resources_of_type(tree, "Microsoft.Web/serverfarms").values()
    assert plan["config"]["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    (site,) = resources_of_type(tree, "Microsoft.Web/sites").values()
    assert site["config"]["kind"] == "functionapp,linux"
    config = site["config"]["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    scale = config["scaleAndConcurrency"]
    assert scale["maximumInstanceCount"] == "maximumInstanceCount"
    assert tree["parameters"]["instanceMemoryMB"]["default"] == 2048
    assert config["deployment"]["storage"]["authentication"]["type"] == (
        "UserAssignedIdentity"
    )


# --- role assignments ------------------------------------------------------------


def role_assignments() -> list[tuple[Path, str, dict[str, Any]]]:
    found = []
    for path in BICEP_FILES:
        tree = parse(path)
        for name, resource in resources_of_type(
            tree, "Microsoft.Authorization/roleAssignments"
        ).items():
            found.append((path, name, resource))
    return found


def test_there_are_role_assignments() -> None:
    assert len(role_assignments()) >= len(REQUIRED_ROLES)


def test_every_role_assignment_is_named_with_guid() -> None:
    for path, name, resource in role_assignments():
        assert resource["config"]["name"]["function"]["type"] == "guid", (
            f"{path.name}:{name}"
        )


def test_every_role_is_a_named_constant_and_commented() -> None:
    granted = set()
    for path, name, resource in role_assignments():
        definition = resource["config"]["properties"]["roleDefinitionId"]
        function = definition["function"]
        assert function["type"] == "subscription_resource_id", name
        constant = function["parameters"]["resource_name_1"]
        value = parse(path)["variables"][constant]["value"]
        assert GUID.match(value), f"{name}: {constant} is not a role id"
        granted.add(value)
        # The lines right above the declaration are a comment.
        lines = path.read_text(encoding="utf-8").splitlines()
        index = next(
            i for i, line in enumerate(lines) if line.startswith(f"resource {name} ")
        )
        assert lines[index - 1].startswith("//"), f"{name} has no comment"
    missing = set(REQUIRED_ROLES) - granted
    assert not missing, [REQUIRED_ROLES[role] for role in missing]


def test_each_role_is_commented_with_its_name() -> None:
    text = (MODULES / "roles.bicep").read_text(encoding="utf-8")
    for role_name in REQUIRED_ROLES.values():
        assert re.search(rf"^// {re.escape(role_name)}:", text, re.MULTILINE), role_name


# --- deploy.sh -------------------------------------------------------------------


FAKE_AZ = r"""#!/usr/bin/env bash
# Records its arguments, answers like az would for what deploy.sh asks.
printf '%s\n' "$*" >> "$AZ_LOG"
case "$*" in
  *"deployment group create"*)
    for arg in "$@"; do
      case "$arg" in @*) cp "${arg#@}" "$AZ_PARAMS_COPY" ;; esac
    done ;;
  *"deployment group show"*functionAppName*) echo func-presence-abc ;;
  *"deployment group show"*functionAppHostName*) echo func-presence-abc.example ;;
  *"deployment group show"*eventGridTopicEndpoint*) echo https://topic/api/events ;;
  *"deployment group show"*storageAccountName*) echo stabc ;;
  *"deployment group show"*keyVaultName*) echo kv-abc ;;
  *"config-zip"*)
    while [[ $# -gt 0 ]]; do
      if [[ "$1" == "--src" ]]; then cp "$2" "$AZ_ZIP_COPY"; fi
      shift
    done ;;
esac
"""


def run_deploy(
    tmp_path: Path, *args: str, secret: str | None = None
) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "az"
    fake.write_text(FAKE_AZ, encoding="utf-8")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "AZ_LOG": str(tmp_path / "az.log"),
        "AZ_PARAMS_COPY": str(tmp_path / "params.json"),
        "AZ_ZIP_COPY": str(tmp_path / "app.zip"),
    }
    if secret is not None:
        env["GRAPH_CLIENT_SECRET"] = secret
    return subprocess.run(
        ["bash", str(DEPLOY), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_deploy_refuses_missing_arguments(tmp_path: Path) -> None:
    result = run_deploy(tmp_path, "-g", "rg")
    assert result.returncode != 0
    assert "Usage:" in result.stderr
    assert not (tmp_path / "az.log").exists()


def test_deploy_provisions_then_publishes_the_app_only(tmp_path: Path) -> None:
    secret = "not-a-real-secret-7f3a"
    result = run_deploy(
        tmp_path,
        "-g",
        "rg-presence",
        "-l",
        "swedencentral",
        "-e",
        "dev",
        "-c",
        "11111111-2222-3333-4444-555555555555",
        secret=secret,
    )
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "az.log").read_text(encoding="utf-8").splitlines()
    assert calls[0].startswith("group create --name rg-presence")
    create = next(c for c in calls if c.startswith("deployment group create"))
    assert "infra/main.bicep" in create
    publish = next(c for c in calls if "config-zip" in c)
    assert "--build-remote true" in publish
    assert "--name func-presence-abc" in publish
    # The secret reached the template through the parameters file only.
    assert all(secret not in call for call in calls)
    parameters = json.loads((tmp_path / "params.json").read_text("utf-8"))
    assert parameters["parameters"]["graphClientSecret"]["value"] == secret
    assert parameters["parameters"]["environmentName"]["value"] == "dev"
    # What is shipped: the app, not the repository.
    with zipfile.ZipFile(tmp_path / "app.zip") as archive:
        names = set(archive.namelist())
    assert {"function_app.py", "host.json", "requirements.txt"} <= names
    assert any(name.startswith("functions/") for name in names)
    assert "shared/settings.py" in names
    for name in names:
        assert name.split("/")[0] in {
            "function_app.py",
            "host.json",
            "requirements.txt",
            "functions",
            "shared",
        }, name
        assert "__pycache__" not in name and not name.endswith(".pyc"), name
    assert "az functionapp keys list" in result.stdout
    assert "https://func-presence-abc.example/api" in result.stdout


def test_deploy_without_a_secret_does_not_send_one(tmp_path: Path) -> None:
    result = run_deploy(
        tmp_path, "-g", "rg", "-l", "westus2", "-e", "dev", "-c", "id", "--skip-code"
    )
    assert result.returncode == 0, result.stderr
    parameters = json.loads((tmp_path / "params.json").read_text("utf-8"))
    assert "graphClientSecret" not in parameters["parameters"]
    calls = (tmp_path / "az.log").read_text(encoding="utf-8")
    assert "config-zip" not in calls
