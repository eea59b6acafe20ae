"""App settings: ``local.settings.json`` Values, overridden by the environment.

The real Core Tools host reads ``local.settings.json`` and exports its
``Values`` as environment variables; variables already set in the
environment win. We do the same, falling back to the checked-in
``local.settings.sample.json`` so a fresh clone runs without a copy step.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path

logger = logging.getLogger(__name__)

LOCAL_SETTINGS = "local.settings.json"
SAMPLE_SETTINGS = "local.settings.sample.json"

# Name of the app setting holding the key that FUNCTION and ADMIN level HTTP
# routes require (header ``x-functions-key`` or query parameter ``code``).
FUNCTION_KEY_SETTING = "DEVHOST_FUNCTION_KEY"

DEFAULT_CONNECTION_SETTING = "AzureWebJobsStorage"
DEVELOPMENT_STORAGE = "UseDevelopmentStorage=true"

# The fixed development account every Azurite accepts, on its default ports.
_AZURITE_ACCOUNT = "devstoreaccount1"
_AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
    "K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_DEFAULT_CONNECTION = (
    "DefaultEndpointsProtocol=http;"
    f"AccountName={_AZURITE_ACCOUNT};AccountKey={_AZURITE_KEY};"
    f"BlobEndpoint=http://127.0.0.1:10000/{_AZURITE_ACCOUNT};"
    f"QueueEndpoint=http://127.0.0.1:10001/{_AZURITE_ACCOUNT};"
    f"TableEndpoint=http://127.0.0.1:10002/{_AZURITE_ACCOUNT};"
)

_PERCENT_REFERENCE = re.compile(r"%([^%]+)%")


class SettingsError(ValueError):
    """A settings file or a referenced setting is missing or malformed."""


def read_settings_file(script_root: Path) -> dict[str, str]:
    """``Values`` of local.settings.json, else of the sample, else nothing."""
    for name in (LOCAL_SETTINGS, SAMPLE_SETTINGS):
        path = script_root / name
        if not path.is_file():
            continue
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise SettingsError(f"{path} is not valid JSON: {error}") from error
        values = document.get("Values") or {}
        if not isinstance(values, dict):
            raise SettingsError(f"{path}: 'Values' must be an object")
        logger.info("Settings read from %s", path)
        # The host hands every value to the app as a string, like Azure does.
        return {str(key): str(value) for key, value in values.items()}
    logger.warning("No %s or %s in %s", LOCAL_SETTINGS, SAMPLE_SETTINGS, script_root)
    return {}


def effective_settings(
    file_values: Mapping[str, str], environ: Mapping[str, str]
) -> dict[str, str]:
    """File values overlaid by the environment (the environment wins)."""
    merged = dict(file_values)
    merged.update(environ)
    return merged


def export_to_environ(
    file_values: Mapping[str, str], environ: MutableMapping[str, str]
) -> None:
    """Set file values the environment does not already define."""
    for name, value in file_values.items():
        environ.setdefault(name, value)


def resolve_references(text: str, settings: Mapping[str, str]) -> str:
    """Replace ``%NAME%`` with the setting NAME, as binding expressions do."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in settings:
            raise SettingsError(f"setting {name!r} referenced as %{name}% is not set")
        return settings[name]

    return _PERCENT_REFERENCE.sub(lookup, text)


def storage_connection_string(
    connection_setting: str | None, settings: Mapping[str, str]
) -> str:
    """The connection string a trigger's ``connection`` names.

    An empty ``connection`` means AzureWebJobsStorage, as in the real host.
    """
    name = connection_setting or DEFAULT_CONNECTION_SETTING
    value = settings.get(name, "").strip()
    if not value:
        raise SettingsError(
            f"storage connection setting {name!r} is not set (a connection "
            f"string, or {DEVELOPMENT_STORAGE!r} for Azurite on default ports)"
        )
    if value.replace(" ", "").lower() == DEVELOPMENT_STORAGE.lower():
        return AZURITE_DEFAULT_CONNECTION
    return value
