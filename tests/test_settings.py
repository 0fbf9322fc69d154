"""One settings module: every variable declared once, one error style, the docs table generated."""

from __future__ import annotations

from pathlib import Path

import pytest

from escalations.settings import ApiSettings, ConfigError, NotificationSettings, WorkerSettings, configuration_table

ROOT = Path(__file__).resolve().parent.parent


def test_the_documented_table_is_the_generated_one():
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    documented = text.split("<!-- settings-table:start -->")[1].split("<!-- settings-table:end -->")[0].strip()
    assert documented == configuration_table(), "regenerate it: python -m escalations.settings"


def test_invalid_values_name_their_variable_in_one_style():
    with pytest.raises(ConfigError) as bad:
        WorkerSettings.from_env({"DATABASE_URL": "postgresql://x", "ESCALATION_MAX_CACHED_WORKFLOWS": "lots",
                                 "ESCALATION_STRICT_SANDBOX": "maybe"})
    assert "ESCALATION_MAX_CACHED_WORKFLOWS: " in str(bad.value) and "ESCALATION_STRICT_SANDBOX: " in str(bad.value)
    with pytest.raises(ConfigError, match="DATABASE_URL: Field required"):
        WorkerSettings.from_env({})


def test_booleans_durations_lists_and_per_target_urls():
    worker = WorkerSettings.from_env({"DATABASE_URL": "postgresql://x", "ESCALATION_STRICT_SANDBOX": "on",
                                      "ESCALATION_STICKY_QUEUE_TIMEOUT_SECONDS": "2s"})
    assert worker.strict_sandbox is True and worker.sticky_queue_timeout.total_seconds() == 2
    api = ApiSettings.from_env({"ESCALATION_API_TOKENS": " a, b ,", "TEMPORAL_ADDRESS": "temporal:7233"})
    assert [t.name for t in api.api_tokens] == ["legacy-1", "legacy-2"]
    assert api.temporal["target_host"] == "temporal:7233"
    channels = NotificationSettings.from_env({"ESCALATION_SLACK_WEBHOOK_URL_ENG_ONCALL": "https://hooks/x"})
    assert channels.chat_webhook_url("slack", "#eng-oncall").get_secret_value() == "https://hooks/x"


def test_a_dot_env_file_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://from-dot-env\nESCALATION_TASK_QUEUE=q1\n")
    settings = WorkerSettings.from_env()
    assert (settings.database_url, settings.task_queue) == ("postgresql://from-dot-env", "q1")


def test_settings_built_by_hand_read_no_environment(monkeypatch):
    monkeypatch.setenv("ESCALATION_TASK_QUEUE", "from-env")
    assert WorkerSettings.of(database_url="x").task_queue == "escalations"
