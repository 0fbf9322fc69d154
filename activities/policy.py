"""Loading escalation policies from YAML, once per run (the run then pins what it got)."""

from __future__ import annotations

import asyncio

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from escalations.db.eventstore import register_policy
from escalations.policies import PolicySource
from schemas.activities import LoadedPolicy, PolicyRequest
from schemas.policy import Policy, PolicyError, policy_digest

__all__ = ["PolicyActivities", "policy_digest"]


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
