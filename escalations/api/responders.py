"""Responders act where they are paged: one action on one escalation, as a policy contact.

Both front doors of a page use it: a signed action link (``escalations.api.actions``; the
contact is the link's recipient, the channel its page's, ``via`` ``link:<channel>``) and a
Slack button (``escalations.api.slack``; the contact is whoever the pressing member is in
the policy, ``via`` ``slack:<member id>``). Every check is made against the live state and
the escalation's pinned policy, in this order, and the first that fails answers with why and
changes nothing:

1. the link was not used before (``action_link_uses``): 409 "already done by X at T";
2. it has not expired (the policy's ``action_links.expire_after`` after the page): 410;
3. it is the ticket's current escalation, still at the level the page was for: else 410
   (superseded: the escalation moved on, closed, or the ticket was escalated anew);
4. the contact may act on it (``schemas.actions.standing``): else 403, saying why;
5. the action is possible now (acknowledged already, last level, ...): else 409;
6. the link is claimed (one statement; a concurrent press waits its turn and reads 1.), the
   command goes to the workflow through ``escalations.client`` with ``by`` the contact and
   ``via`` the channel, and the workflow's validator has the last word (an acknowledgement
   names the level it is for, an escalation ``from_level``: a move that happened in between
   is refused, never acted on); a refused command releases the claim.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from temporalio.client import Client

from escalations import client as ec
from escalations.db import actions as uses
from escalations.links import ActionToken
from escalations.policies import PolicySource, UnknownPolicy
from schemas.actions import ACTION_DONE, Standing, possible, refusal, standing
from schemas.escalation import AcknowledgeCommand, AddNoteCommand, EscalateCommand, EscalationState
from schemas.policy import Policy, PolicyError, parse_policy

log = logging.getLogger("escalations.api")

# A claim this old without its command's answer belongs to a request that died: taken over.
STALE_CLAIM = timedelta(minutes=1)
NOTE_LIMIT = 8_000  # AddNoteCommand.text


class Refused(Exception):
    """The action cannot be taken (nothing changed): ``status`` and a one-line ``title``, the
    ``detail`` saying why, and the escalation's ``state`` when it is known."""

    def __init__(self, status: int, title: str, detail: str, state: EscalationState | None = None) -> None:
        super().__init__(f"{title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.state = state


@dataclass(frozen=True)
class Ready:
    """All checks passed: who acts, from where, on what state (what a confirmation page shows)."""

    token: ActionToken
    actor: str
    who: Standing
    state: EscalationState
    policy: Policy


@dataclass(frozen=True)
class Done:
    """The action was taken: ``summary`` is one line ("Acknowledged by Dana at 14:02 UTC")."""

    summary: str
    state: EscalationState


@dataclass(frozen=True)
class Responders:
    """What acting needs: the Temporal client, the pool, the policy source and the time bounds."""

    client: Client
    pool: asyncpg.Pool
    policies: PolicySource
    timeouts: ec.Timeouts

    async def pinned_policy(self, state: EscalationState) -> Policy:
        """The policy version the run pinned: as the projection stored it, else the same version
        from the policy files; 503 when neither has it."""
        ref = state.policy
        document = await uses.pinned_policy_document(self.pool, ref.name, ref.version)
        if document is not None:
            try:
                return parse_policy(document, f"{ref.name} v{ref.version} (pinned)")
            except PolicyError as exc:
                log.error("the pinned document of policy %s v%s does not parse: %s", ref.name, ref.version, exc)
        try:
            policy = self.policies.load(ref.name)
        except (UnknownPolicy, PolicyError):
            policy = None
        if policy is None or policy.version != ref.version:
            raise Refused(503, "The escalation's policy is not available",
                          f"policy {ref.name} v{ref.version} is neither stored in PostgreSQL yet nor in this API's "
                          "policy files; try again in a moment", state)
        return policy

    async def check(self, token: ActionToken, actor: str, *, now: datetime | None = None) -> Ready:
        """Checks 1-5 (nothing written): what a confirmation page shows, or ``Refused``."""
        now = now or datetime.now(UTC)
        used = await uses.use_of(self.pool, token.id)
        state: EscalationState | None = None
        if used is not None:
            state = await self._state_or_none(token)
            if used.done:
                raise Refused(409, "Already done", _used(used), state)
            raise Refused(409, "Being done right now",
                          f"{used.actor} ({used.via}) is taking this action at this moment; reload in a few seconds",
                          state)
        if token.expired(now):
            state = await self._state_or_none(token)
            raise Refused(410, "This link has expired",
                          f"it was valid until {_at(token.expires_at)}; act from the latest page or the API", state)
        state = await self._live(token)
        if state.escalation_id != token.escalation_id:
            raise Refused(410, "This link is superseded",
                          f"it was for an earlier escalation of {token.ticket_id}, which has ended; the ticket has "
                          "been escalated again", state)
        if state.level != token.level:
            moved = next((p for p in reversed(state.path) if p.from_level == token.level
                          and p.to_level != p.from_level), None)
            when = f" at {_at(moved.at)}" if moved is not None else ""
            raise Refused(410, "This link is superseded",
                          f"it was for {token.level}, and the escalation has moved to {state.level_name} "
                          f"({state.level}){when}; act from the page to {state.level_name}", state)
        policy = await self.pinned_policy(state)
        who = standing(policy, actor, state)
        if who is None:
            raise Refused(403, "You may not act on this escalation", refusal(policy, actor, state), state)
        if token.action not in possible(policy, who, state):
            raise Refused(409, "Not possible now", _impossible(token.action, who, state), state)
        return Ready(token, actor, who, state, policy)

    async def act(self, token: ActionToken, actor: str, via: str, *, text: str | None = None,
                  now: datetime | None = None) -> Done:
        """Checks 1-5, then claim, command, record (6.); ``Refused`` when anything says no."""
        ready = await self.check(token, actor, now=now)
        if token.action == "note":
            if not text or not text.strip():
                raise Refused(422, "The note is empty", "write the note, then add it", ready.state)
            if len(text) > NOTE_LIMIT:
                raise Refused(422, "The note is too long",
                              f"a note holds at most {NOTE_LIMIT} characters; this one has {len(text)}", ready.state)
        held = await uses.claim(self.pool, token_id=token.id, escalation_id=token.escalation_id,
                                ticket_id=token.ticket_id, action=token.action, actor=actor, via=via,
                                expires_at=token.expires_at, stale_after=STALE_CLAIM)
        if held is not None:
            raise Refused(409, "Already done" if held.done else "Being done right now",
                          _used(held) if held.done else f"{held.actor} ({held.via}) is taking this action at "
                                                        "this moment; reload in a few seconds", ready.state)
        try:
            state = await self._command(ready, via, text)
        except ec.CommandRejected as exc:
            await uses.release(self.pool, token.id)
            raise Refused(409, "Not possible now", exc.message, await self._state_or_none(token)) from None
        except BaseException:
            await uses.release(self.pool, token.id)
            raise
        summary = _summary(token.action, actor, state, datetime.now(UTC))
        await uses.complete(self.pool, token.id, at=datetime.now(UTC), outcome=summary)
        log.info("%s on %s through %s (link %s)", summary, token.ticket_id, via, token.id)
        return Done(summary, state)

    async def _command(self, ready: Ready, via: str, text: str | None) -> EscalationState:
        token, actor, who = ready.token, ready.actor, ready.who
        if token.action == "acknowledge":
            level = who.as_level if who.role == "consulted" else token.level
            return await ec.acknowledge(self.client, token.ticket_id, AcknowledgeCommand(by=actor, level=level),
                                        via=via, timeouts=self.timeouts)
        if token.action == "escalate":
            reason = one_line(text) or f"escalated by {actor} from the page"
            return await ec.escalate(self.client, token.ticket_id,
                                     EscalateCommand(by=actor, reason=reason, from_level=token.level),
                                     via=via, timeouts=self.timeouts)
        if token.action == "note":
            assert text is not None
            return await ec.add_note(self.client, token.ticket_id,
                                     AddNoteCommand(author=actor, text=text, customer_visible=False),
                                     via=via, timeouts=self.timeouts)
        raise Refused(400, "Unknown action", f"{token.action!r} is not an action of this API")

    async def _live(self, token: ActionToken) -> EscalationState:
        try:
            return await ec.live_state(self.client, token.ticket_id, timeouts=self.timeouts)
        except ec.EscalationClosed as exc:
            raise Refused(410, "The escalation is closed", f"{exc.message}; nothing is left to do here") from None
        except ec.EscalationNotFound as exc:
            raise Refused(410, "The escalation is gone", exc.message) from None
        except ec.EscalationNotReady as exc:
            raise Refused(503, "The escalation is still opening", f"{exc.message}; reload in a moment") from None

    async def _state_or_none(self, token: ActionToken) -> EscalationState | None:
        """The live state to show beside a refusal, if it can be had."""
        try:
            return await ec.live_state(self.client, token.ticket_id, timeouts=self.timeouts)
        except (ec.EscalationClosed, ec.EscalationNotFound, ec.EscalationNotReady):
            return None


def one_line(text: str | None) -> str:
    return " ".join((text or "").split())[:2000]


def _at(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _used(use: uses.LinkUse) -> str:
    when = _at(use.done_at or use.claimed_at)
    return f"{use.outcome or ACTION_DONE.get(use.action, use.action)} (this link was used by {use.actor} through " \
           f"{use.via} at {when}); it acts only once"


def _impossible(action: str, who: Standing, state: EscalationState) -> str:
    if state.status not in ("open", "acknowledged", "paused"):
        return f"the escalation is {state.status}"
    if action == "acknowledge":
        by = state.acknowledged_by or "someone"
        via = f" ({state.acknowledged_via})" if state.acknowledged_via else ""
        when = f" at {_at(state.acknowledged_at)}" if state.acknowledged_at else ""
        return f"{state.level_name} has already acknowledged it: {by}{via}{when}"
    if action == "escalate":
        if who.role == "consulted":
            return f"{who.contact} is consulted on it ({who.as_level}); only its owners and the levels above escalate"
        return f"{state.level_name} is the last level of the chain"
    return f"{action} is not possible now"


def _summary(action: str, actor: str, state: EscalationState, now: datetime) -> str:
    if action == "acknowledge":
        consulted = [c for c in state.consulted if c.acknowledged_by == actor and c.acknowledged_at]
        at = state.acknowledged_at if state.acknowledged_by == actor else (
            consulted[-1].acknowledged_at if consulted else None)
        return f"Acknowledged by {actor} at {(at or now).astimezone(UTC):%H:%M} UTC"
    if action == "escalate":
        moved = next((p for p in reversed(state.path) if p.to_level != p.from_level), None)
        at = moved.at if moved is not None else now
        return f"Escalated to {state.level_name} by {actor} at {at.astimezone(UTC):%H:%M} UTC"
    return f"Note added by {actor} at {now.astimezone(UTC):%H:%M} UTC"
