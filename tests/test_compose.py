"""docker-compose.yml, the Dockerfile and their files, checked without a Docker engine (none runs here).

The compose file is validated against the compose specification (the schema check-jsonschema
ships) and read against the code: services, health checks, secrets, published ports, image
tags, search attributes, settings and scrape targets.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from schemas.keys import DEFAULT_TASK_QUEUE, search_attribute_flags
from starter import app
from tests.helpers.paths import ROOT

COMPOSE = ROOT / "docker-compose.yml"
# Contract additions built in parallel (DESIGN.md, second round): registered by the compose
# job already; schemas/keys.py and the settings gain them with their features.
CONTRACT_SEARCH_ATTRIBUTES: set[str] = set()
CONTRACT_VARIABLES: set[str] = set()
APP_SERVICES = {"migrate": "migrate", "worker": "worker", "api": "api"}
# Variables whose value would be a secret if written into the compose file.
SECRET_NAME = re.compile(r"PASSWORD|PWD|SECRET|TOKEN|API_KEY|ENCRYPTION_KEYS|ACTION_KEY")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def one_shot(service: dict) -> bool:
    return str(service.get("restart", "")).startswith("on-failure")


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def test_the_file_validates_against_the_compose_specification() -> None:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema (test extra) carries the compose schema")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_services(services: dict) -> None:
    assert set(services) == {
        "postgresql", "temporal-schema", "temporal", "temporal-namespace", "temporal-search-attributes",
        "temporal-ui", "escalations-db", "migrate", "grafana-reader", "worker", "api", "prometheus", "grafana",
    }
    temporal = services["temporal"]
    assert temporal["image"].startswith("temporalio/server:"), "the server image, not auto-setup"
    assert environment(temporal)["DB"] == "postgres12"
    assert environment(temporal)["POSTGRES_SEEDS"] == "postgresql"
    assert "temporal-sql-tool" in services["temporal-schema"]["command"][0]
    assert services["temporal"]["depends_on"]["temporal-schema"]["condition"] == "service_completed_successfully"


def test_every_long_running_service_has_a_health_check_and_every_job_is_one_shot(services: dict) -> None:
    waited_for = {
        dependency for service in services.values()
        for dependency, how in (service.get("depends_on") or {}).items()
        if how["condition"] == "service_completed_successfully"
    }
    for name, service in services.items():
        if one_shot(service):
            # A job: retried when it fails (a database not up yet), awaited by what needs it.
            assert name in waited_for, f"{name} is a job nobody waits for"
            assert "healthcheck" not in service and "ports" not in service, name
        else:
            assert service.get("restart") == "unless-stopped", f"{name}: no restart policy"
            check = service.get("healthcheck", {}).get("test")
            assert check and check[0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
    assert waited_for <= {name for name, service in services.items() if one_shot(service)}


def test_postgres_is_ready_only_when_it_answers_over_tcp(services: dict) -> None:
    check = services["postgresql"]["healthcheck"]["test"]
    assert "pg_isready" in check and check[check.index("-h") + 1] == "127.0.0.1"
    for job in ("temporal-schema", "escalations-db"):
        assert services[job]["depends_on"]["postgresql"]["condition"] == "service_healthy"


def test_no_secret_is_written_into_the_compose_file(compose: dict, services: dict) -> None:
    declared = compose["secrets"]
    for name, secret in declared.items():
        assert set(secret) == {"file"} and secret["file"].startswith("./secrets/"), name
    for name, service in services.items():
        for variable, value in environment(service).items():
            if SECRET_NAME.search(variable):
                assert variable.endswith("_FILE"), f"{name}: {variable} inline"
                assert value.startswith("/run/secrets/"), f"{name}: {variable}={value}"
                assert value.removeprefix("/run/secrets/") in service.get("secrets", []), f"{name}: {variable}"
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", value), f"{name}: {variable} has a password in a URL"
        for secret in service.get("secrets", []):
            assert secret in declared, f"{name} uses an undeclared secret {secret}"
    # ./secrets is generated by docker/make-secrets.sh and never committed.
    script = (ROOT / "docker" / "make-secrets.sh").read_text()
    assert all(name in script for name in declared)
    assert "secrets/" in (ROOT / ".gitignore").read_text().splitlines()
    assert "secrets" in (ROOT / ".dockerignore").read_text().splitlines()


def test_temporal_and_its_ui_are_not_published(compose: dict, services: dict) -> None:
    published = {name: service["ports"] for name, service in services.items() if "ports" in service}
    assert published == {"api": ["8000:8000"], "grafana": ["127.0.0.1:3000:3000"]}
    assert compose["networks"]["backend"]["internal"] is True
    for name in ("postgresql", "temporal", "temporal-ui", "prometheus"):
        assert services[name]["networks"] == ["backend"], name


def test_images_are_pinned_to_tags_that_exist(services: dict) -> None:
    images = {name: service["image"] for name, service in services.items() if "image" in service}
    for name, image in images.items():
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: {image} is not pinned"
    # Temporal's self-hosting compose pins server and admin-tools to the same plain version
    # (from 1.30; 1.29's admin-tools tag carried a -tctl-…-cli-… suffix).
    server = images["temporal"].split(":")[1]
    assert re.fullmatch(r"\d+\.\d+\.\d+", server)
    for job in ("temporal-schema", "temporal-namespace", "temporal-search-attributes"):
        assert images[job] == f"temporalio/admin-tools:{server}"
    assert "auto-setup" not in COMPOSE.read_text()


def test_one_image_built_once(services: dict) -> None:
    built = [name for name, service in services.items() if "build" in service]
    assert built == ["migrate"]
    image = services["migrate"]["image"]
    for name in APP_SERVICES:
        assert services[name]["image"] == image


def test_namespace_retention_is_configurable_and_30_days_by_default(services: dict) -> None:
    job = services["temporal-namespace"]
    assert environment(job)["RETENTION"] == "${TEMPORAL_NAMESPACE_RETENTION:-720h}"  # 30 days
    script = job["command"][0]
    assert '--retention "$$RETENTION"' in script
    assert "namespace create" in script and "namespace update" in script
    assert job["depends_on"]["temporal"]["condition"] == "service_healthy"


def test_search_attributes_match_the_code(services: dict) -> None:
    job = services["temporal-search-attributes"]
    script = job["command"][0]
    registered = re.findall(r"\b([A-Za-z]+=(?:Keyword|Bool|Datetime))\b", script)
    assert len(registered) == len(set(registered))
    assert set(registered) == set(search_attribute_flags()) | CONTRACT_SEARCH_ATTRIBUTES
    assert '--name "$$name" --type "$${attribute#*=}"' in script
    assert job["depends_on"]["temporal-namespace"]["condition"] == "service_completed_successfully"


def test_application_services_use_real_commands_and_settings(services: dict) -> None:
    commands = {c.name for c in app.registered_commands}
    for name, expected in APP_SERVICES.items():
        assert services[name]["command"] == ["escalations", expected]
        assert expected in commands, f"`escalations {expected}` is not a registered command"
    env = environment(services["worker"])
    assert env["ESCALATION_TASK_QUEUE"] == DEFAULT_TASK_QUEUE
    assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["DATABASE_URL"] == "postgresql://escalations@postgresql:5432/escalations"
    # The policy directory is mounted where the setting points.
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in services["worker"]["volumes"])
    policy = Path(env["ESCALATION_POLICY_FILE"])
    source = next(ROOT / host for host, target in mounts.items() if policy.is_relative_to(target))
    assert (source / policy.name).is_file()
    assert "ESCALATION_API_TOKENS_FILE" in environment(services["api"])
    # Every variable the stack sets is one the code reads (VAR_FILE: VAR, by the entrypoint).
    assert "ESCALATION_ENCRYPTION_KEYS_FILE" in env  # every part encrypts with the same keys
    # The UI decodes through the API's /codec, which lets the UI's origin in.
    codec = services["temporal-ui"]["environment"]["TEMPORAL_CODEC_ENDPOINT"]
    assert codec == f"${{ESCALATION_PUBLIC_URL:-http://localhost:{services['api']['ports'][0].split(':')[0]}}}/codec"
    assert services["api"]["environment"]["ESCALATION_CODEC_UI_ORIGINS"] == "${TEMPORAL_UI_ORIGIN:-http://localhost:8080}"
    code = "\n".join(p.read_text() for p in ROOT.glob("**/*.py") if ".venv" not in p.parts)
    for name in APP_SERVICES:
        for variable, value in environment(services[name]).items():
            if value.startswith("/run/secrets/"):
                variable = variable.removesuffix("_FILE")
            if variable.startswith("ESCALATION_") and variable not in CONTRACT_VARIABLES:
                assert re.search(rf'["\']{variable}["\']', code), f"{variable} is not read by the code"


def test_prometheus_scrapes_the_workers_the_api_and_temporal(services: dict) -> None:
    config = yaml.safe_load((ROOT / "docker" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker = jobs["escalations-worker"]["dns_sd_configs"][0]  # every replica, not one of them
    assert worker["names"] == ["worker"] and worker["type"] == "A"
    assert str(worker["port"]) == environment(services["worker"])["ESCALATION_METRICS_PORT"]
    assert environment(services["worker"])["ESCALATION_METRICS_HOST"] == "0.0.0.0"
    api_port = environment(services["api"])["ESCALATION_API_PORT"]
    assert jobs["escalations-api"]["static_configs"][0]["targets"] == [f"api:{api_port}"]
    temporal_port = environment(services["temporal"])["PROMETHEUS_ENDPOINT"].rsplit(":", 1)[1]
    assert jobs["temporal"]["static_configs"][0]["targets"] == [f"temporal:{temporal_port}"]
    mounted = [volume.split(":")[1] for volume in services["prometheus"]["volumes"]]
    assert "/etc/prometheus/prometheus.yml" in mounted
    assert all(rules in mounted for rules in config["rule_files"])


def test_grafana_is_provisioned_from_the_repository(services: dict) -> None:
    grafana = services["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"] if volume.startswith("./"))
    assert mounts["./docker/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((ROOT / "docker/grafana/provisioning/dashboards/dashboards.yml").read_text())
    assert mounts["./docker/grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert environment(grafana)["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"


# -- the image ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def stages(dockerfile: str) -> list[list[str]]:
    found: list[list[str]] = []
    for line in dockerfile.splitlines():
        if line.startswith("FROM "):
            found.append([])
        if found:
            found[-1].append(line)
    return found


def test_dockerfile_is_multi_stage_non_root_with_a_health_check(dockerfile: str) -> None:
    build, runtime = stages(dockerfile)
    assert build[0].endswith(" AS build") and runtime[0].endswith(" AS runtime")
    final = "\n".join(runtime)
    assert "COPY --from=build /opt/escalations /opt/escalations" in final
    user = re.findall(r"^USER (\S+)", final, re.MULTILINE)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*--interval=", final, re.MULTILINE)
    assert "/livez" in final
    # Nothing but the virtualenv comes from the build stage: no sources, tools or caches.
    assert not re.search(r"^(RUN .*pip|COPY (?!--from=build /opt/escalations|--chmod=755 docker/entrypoint))",
                         final, re.MULTILINE)


def test_dockerfile_installs_only_the_lock_with_hashes(dockerfile: str) -> None:
    installs = [line for line in dockerfile.replace("\\\n", " ").splitlines() if "pip install" in line]
    locked = [part for line in installs for part in line.split("&&") if "pip install" in part]
    for command in locked:
        if "-r " in command:
            assert "--require-hashes" in command and "--no-deps" in command, command
        else:  # the project's own wheel, built here; its dependencies come from the lock
            assert "--no-deps" in command and "/wheels/" in command, command
    assert "--no-build-isolation" in dockerfile  # nothing fetched unpinned to build the wheel


def test_dockerfile_copies_every_package_and_not_the_benchmarks(dockerfile: str) -> None:
    for package in ("workflows", "activities", "schemas", "escalations"):
        assert f"COPY {package} {package}" in dockerfile
    assert "COPY bench" not in dockerfile, "the benchmarks are not part of the image"
    assert "worker.py starter.py" in dockerfile
    assert "bench" in (ROOT / ".dockerignore").read_text().splitlines()


def test_dockerfile_copies_the_files_the_build_reads(dockerfile: str) -> None:
    """pip wheel . reads the readme and the license files named in pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    copied = " ".join(line for line in dockerfile.splitlines() if line.startswith("COPY"))
    for name in [project["readme"], *project["license-files"], "requirements.lock", "requirements-build.lock"]:
        assert (ROOT / name).is_file()
        assert f" {name} " in copied, f"{name} is read by the build but not copied"


def locked(path: Path) -> dict[str, str]:
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", path.read_text(), re.MULTILINE))
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins.items()}


def test_the_lock_pins_every_runtime_dependency_and_no_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = locked(ROOT / "requirements.lock")
    text = (ROOT / "requirements.lock").read_text()
    for requirement in project["dependencies"]:
        name = re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", requirement)[0]).lower()
        assert name in pins, f"{name} is not in requirements.lock: run `make lock`"
    # uv notes what pulled each pin in: "# via rich" (one line) or "# via\n    #   rich" (several).
    via = {re.sub(r"[-_.]+", "-", name).lower(): block
           for name, block in re.findall(r"^([A-Za-z0-9_.-]+)==\S+.*?\n((?:\s+(?:--hash|#)[^\n]*\n)+)", text,
                                         re.MULTILINE | re.DOTALL)}
    for extra in ("dev", "charts", "test", "bench"):
        for requirement in project["optional-dependencies"][extra]:
            name = re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", requirement)[0]).lower()
            # An extra's package may still be a runtime dependency's dependency (markdown-it-py: rich).
            pulled_by = re.findall(r"#\s+(?:via\s+)?([A-Za-z0-9_.-]+)\s*$", via.get(name, ""), re.MULTILINE)
            assert name not in pins or pulled_by, \
                f"{name} ({extra} extra) is in the image's lock"
    # Every pin carries hashes (pip --require-hashes refuses the lock otherwise).
    hashed = re.findall(r"^[A-Za-z0-9_.-]+==\S+[^\n]*\\\n\s+--hash=sha256:[0-9a-f]{64}", text, re.MULTILINE)
    assert len(hashed) == len(pins)
    assert "setuptools" in locked(ROOT / "requirements-build.lock")


def test_the_entrypoint_turns_secret_files_into_variables(tmp_path: Path) -> None:
    secret = tmp_path / "webhook_secret"
    secret.write_text("t0ken\n")
    tokens = tmp_path / "api_tokens"
    tokens.write_text("ops-admin:admin:0123\n")
    env = {"PATH": os.environ["PATH"], "ESCALATION_WEBHOOK_SECRET_FILE": str(secret),
           "PGPASSWORD_FILE": str(secret), "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
           "ESCALATION_API_TOKENS_FILE": str(tokens)}
    script = str(ROOT / "docker" / "entrypoint.sh")
    shown = subprocess.run(
        ["sh", script, "sh", "-c",
         'echo "$ESCALATION_WEBHOOK_SECRET|$PGPASSWORD|${PGPASSWORD_FILE:-}|$SSL_CERT_FILE|'
         '${ESCALATION_API_TOKENS:-}|$ESCALATION_API_TOKENS_FILE"'],
        env=env, capture_output=True, text=True, timeout=10, check=True)
    # The token file (one entry per line) is the application's to read: left as a path.
    assert shown.stdout.strip() == f"t0ken|t0ken||/etc/ssl/certs/ca-certificates.crt||{tokens}"
    missing = subprocess.run(["sh", script, "true"], env={**env, "ESCALATION_WEBHOOK_SECRET_FILE": "/nope"},
                             capture_output=True, text=True, timeout=10, check=False)
    assert missing.returncode == 1 and "ESCALATION_WEBHOOK_SECRET_FILE" in missing.stderr


def test_the_worker_is_given_longer_than_its_shutdown_grace_to_stop(services: dict) -> None:
    from escalations.settings import WorkerSettings

    grace = services["worker"]["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > WorkerSettings.model_fields["shutdown_grace"].default
