"""docker-compose.yml cannot run here (no Docker engine); check it agrees with the code."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from schemas.keys import DEFAULT_TASK_QUEUE, SEARCH_ATTRIBUTES, search_attribute_flags
from starter import app
from tests.helpers.paths import ROOT


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_ports(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {
        "postgresql", "temporal", "temporal-ui", "temporal-search-attributes", "migrate", "worker", "api",
    }
    assert services["temporal"]["image"].startswith("temporalio/auto-setup:")
    assert services["temporal"]["environment"]["DB"] == "postgres12"
    assert services["temporal"]["environment"]["POSTGRES_SEEDS"] == "postgresql"
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert services["temporal-ui"]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert "7233:7233" in services["temporal"]["ports"]
    assert "8080:8080" in services["temporal-ui"]["ports"]
    assert "8000:8000" in services["api"]["ports"]
    assert services["api"]["environment"]["ESCALATION_API_PORT"] == "8000"


def test_search_attributes_match_the_code(compose: dict) -> None:
    script = compose["services"]["temporal-search-attributes"]["command"][0]
    registered = re.findall(r"\b([A-Za-z]+=(?:Keyword|Bool|Datetime))\b", script)
    assert registered == search_attribute_flags()
    assert len(registered) == len(SEARCH_ATTRIBUTES)
    assert '--name "$$name" --type "$${attribute#*=}"' in script


def test_application_services_use_real_commands_and_settings(compose: dict) -> None:
    commands = {c.name for c in app.registered_commands}
    services = compose["services"]
    for name, expected in (("migrate", "migrate"), ("worker", "worker"), ("api", "api")):
        assert services[name]["command"] == ["escalations", expected]
        assert expected in commands, f"`escalations {expected}` is not a registered command"
    env = services["worker"]["environment"]
    assert env["ESCALATION_TASK_QUEUE"] == DEFAULT_TASK_QUEUE
    assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["DATABASE_URL"].startswith("postgresql://") and "@postgresql:5432/" in env["DATABASE_URL"]
    policy = env["ESCALATION_POLICY_FILE"]
    assert policy.startswith("/app/") and (ROOT / policy.removeprefix("/app/")).exists()
    assert "ESCALATION_API_TOKENS" in services["api"]["environment"]
    assert "ESCALATION_ENCRYPTION_KEYS" in env  # every part encrypts with the same keys
    # The UI decodes through the API's /codec, which lets the UI's origin in.
    codec = services["temporal-ui"]["environment"]["TEMPORAL_CODEC_ENDPOINT"]
    assert codec == f"http://localhost:{services['api']['ports'][0].split(':')[0]}/codec"
    assert services["api"]["environment"]["ESCALATION_CODEC_UI_ORIGINS"] == "http://localhost:8080"
    # Every variable the stack reads is one the code reads.
    code = "\n".join(p.read_text() for p in ROOT.glob("**/*.py") if ".venv" not in p.parts)
    for variable in env:
        if variable.startswith("ESCALATION_") or variable == "DATABASE_URL":
            assert re.search(rf'["\']{variable}["\']', code), f"{variable} is not read by the code"


def test_dockerfile_copies_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("workflows", "activities", "schemas", "escalations"):
        assert f"COPY {package} {package}" in dockerfile
    assert "COPY bench" not in dockerfile, "the benchmarks are not part of the image"
    assert "worker.py starter.py" in dockerfile


def test_dockerfile_copies_the_files_the_build_reads() -> None:
    """pip install . reads the readme and the license files named in pyproject.toml."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    copied = " ".join(line for line in dockerfile.splitlines() if line.startswith("COPY"))
    for name in [project["readme"], *project["license-files"]]:
        assert (ROOT / name).is_file()
        assert f" {name} " in copied, f"{name} is read by the build but not copied"
