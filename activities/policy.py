"""Loading escalation policies from YAML, once per run (the run then pins what it got)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from escalations.db.eventstore import register_policy
from schemas.activities import LoadedPolicy, PolicyRequest
from schemas.policy import Policy, PolicyError, load_policy_file


def packaged_policy_dir() -> Path:
    return Path(str(resources.files("escalations.policies")))


def packaged_policy(name: str) -> Path:
    return packaged_policy_dir() / f"{name}.yaml"


@dataclass(frozen=True)
class PolicySource:
    """Where policies come from: the default file, then named files beside it or packaged.

    Parsed files are kept by (path, modification time, size), so an edited file is read
    again and an unchanged one is not parsed on every escalation opened.
    """

    default_file: Path
    search_dirs: list[Path] = field(default_factory=list)
    _parsed: dict[Path, tuple[tuple[int, int], Policy]] = field(default_factory=dict, compare=False, repr=False)

    def _read(self, path: Path) -> Policy:
        try:
            stat = path.stat()
        except OSError as exc:
            raise PolicyError(str(path), [f"cannot read file: {exc.strerror}"]) from None
        version = (stat.st_mtime_ns, stat.st_size)
        cached = self._parsed.get(path)
        if cached is not None and cached[0] == version:
            return cached[1]
        policy = load_policy_file(path)
        self._parsed[path] = (version, policy)
        return policy

    @classmethod
    def from_setting(cls, policy_file: str | None) -> "PolicySource":
        default = Path(policy_file).resolve() if policy_file else packaged_policy("default")
        dirs = [default.parent]
        if packaged_policy_dir() not in dirs:
            dirs.append(packaged_policy_dir())
        return cls(default_file=default, search_dirs=dirs)

    def load(self, name: str | None) -> Policy:
        default = self._read(self.default_file)
        if name is None or name == default.name:
            return default
        for folder in self.search_dirs:
            candidate = folder / f"{name}.yaml"
            if candidate.exists():
                policy = self._read(candidate)
                if policy.name != name:
                    raise PolicyError(str(candidate), [f"name: is {policy.name!r}, expected {name!r}"])
                return policy
        searched = ", ".join(str(d) for d in self.search_dirs)
        raise PolicyError(name, [f"no policy named {name!r} (looked for {name}.yaml in {searched})"])


def policy_digest(policy: Policy) -> str:
    canonical = json.dumps(policy.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# Pinning asks PostgreSQL, but opening an escalation never waits for it: past this, the
# run opens and the projection registers the version when PostgreSQL answers again.
PIN_TIMEOUT = 2.0


class PolicyActivities:
    def __init__(self, pool: asyncpg.Pool, source: PolicySource):
        self._pool = pool
        self._source = source

    def _read(self, request: PolicyRequest) -> Policy:
        try:
            policy = self._source.load(request.name)
        except PolicyError as exc:
            raise ApplicationError(str(exc), type="InvalidPolicy", non_retryable=True) from exc
        if request.version is not None and policy.version != request.version:
            raise ApplicationError(
                f"policy {policy.name} is at version {policy.version} on disk, not {request.version}",
                type="PolicyVersionUnavailable",
                non_retryable=True,
            )
        return policy

    @staticmethod
    def _changed(policy: Policy) -> ApplicationError:
        return ApplicationError(
            f"policy {policy.name} version {policy.version} changed since runs were pinned to it; "
            "bump `version` in the file to publish the change",
            type="PolicyChangedWithoutVersion",
            non_retryable=True,
        )

    @activity.defn(name="pin_policy")
    async def pin_policy(self, request: PolicyRequest) -> LoadedPolicy:
        """Read and validate a policy and pin its version; a version already used must not have changed.

        PostgreSQL is asked for at most ``PIN_TIMEOUT``: when it is down or slow the policy is
        returned unpinned (logged), and the run's projection pins it later.
        """
        policy = self._read(request)
        digest = policy_digest(policy)
        try:
            async with asyncio.timeout(PIN_TIMEOUT):
                async with self._pool.acquire() as conn:
                    stored = await register_policy(conn, policy.name, policy.version, digest,
                                                   policy.model_dump(mode="json"))
        except (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
            activity.logger.warning("policy %s v%s not pinned now (PostgreSQL: %s); the projection pins it",
                                    policy.name, policy.version, type(exc).__name__)
            return LoadedPolicy(policy=policy, digest=digest)
        if stored != digest:
            raise self._changed(policy)
        return LoadedPolicy(policy=policy, digest=digest)

    @activity.defn(name="load_policy")
    async def load_policy(self, request: PolicyRequest) -> Policy:
        """``pin_policy`` for runs of the released commit path (a local activity that waits for PostgreSQL)."""
        policy = self._read(request)
        async with self._pool.acquire() as conn:
            stored = await register_policy(conn, policy.name, policy.version, policy_digest(policy),
                                           policy.model_dump(mode="json"))
        if stored != policy_digest(policy):
            raise self._changed(policy)
        return policy
