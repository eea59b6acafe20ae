"""Settings files, environment precedence and host.json parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devhost.host_config import HostConfigError, load_host_config, parse_timespan
from devhost.settings import (
    AZURITE_DEFAULT_CONNECTION,
    SettingsError,
    effective_settings,
    export_to_environ,
    read_settings_file,
    resolve_references,
    storage_connection_string,
)


def write_settings(folder: Path, name: str, values: dict[str, object]) -> None:
    (folder / name).write_text(json.dumps({"Values": values}), encoding="utf-8")


def test_local_settings_win_over_the_sample(tmp_path: Path) -> None:
    write_settings(tmp_path, "local.settings.sample.json", {"A": "sample"})
    assert read_settings_file(tmp_path) == {"A": "sample"}
    write_settings(tmp_path, "local.settings.json", {"A": "local", "N": 3})
    assert read_settings_file(tmp_path) == {"A": "local", "N": "3"}


def test_environment_wins_over_the_file() -> None:
    environ = {"A": "env"}
    export_to_environ({"A": "file", "B": "file"}, environ)
    assert environ == {"A": "env", "B": "file"}
    assert effective_settings({"A": "file"}, {"A": "env"}) == {"A": "env"}


def test_percent_references() -> None:
    assert resolve_references("%S%", {"S": "*/2 * * * * *"}) == "*/2 * * * * *"
    with pytest.raises(SettingsError, match="MISSING"):
        resolve_references("%MISSING%", {})


def test_development_storage_maps_to_azurite_defaults() -> None:
    settings = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "Other": "x=y"}
    assert storage_connection_string(None, settings) == AZURITE_DEFAULT_CONNECTION
    assert "127.0.0.1:10001" in AZURITE_DEFAULT_CONNECTION
    assert storage_connection_string("Other", settings) == "x=y"
    with pytest.raises(SettingsError, match="Nope"):
        storage_connection_string("Nope", settings)


def test_timespans() -> None:
    assert parse_timespan("00:00:02") == 2
    assert parse_timespan("00:01:00.5") == 60.5
    assert parse_timespan("1.00:00:00") == 86400
    with pytest.raises(HostConfigError):
        parse_timespan("2s")


def test_host_json_queue_options_and_defaults(tmp_path: Path) -> None:
    default = load_host_config(tmp_path)
    assert default.route_prefix == "api"
    assert default.queues.max_dequeue_count == 5
    document = {
        "extensions": {
            "http": {"routePrefix": ""},
            "queues": {"batchSize": 8, "visibilityTimeout": "00:00:03"},
        }
    }
    (tmp_path / "host.json").write_text(json.dumps(document))
    config = load_host_config(tmp_path)
    assert config.route_prefix == ""
    assert config.queues.batch_size == 8
    assert config.queues.new_batch_threshold == 4
    assert config.queues.visibility_timeout == 3
    assert config.queues.message_encoding == "base64"
