"""What a run carries: its state and, after continue-as-new, its input.

Pydantic models, kept out of the sandboxed workflow module and imported passed through, so
they are built once per worker process rather than once per run.
"""

from __future__ import annotations

from pydantic import BaseModel

from schemas.escalation import EscalationRequest, EscalationState
from schemas.policy import Policy
from workflows.clocks import ClockSet


class RunState(BaseModel):
    """Everything a run needs to go on; the continue-as-new payload."""

    view: EscalationState
    policy: Policy
    clocks: ClockSet
    fingerprint: str


class EscalationRunInput(EscalationRequest):
    """The workflow input: a request, plus the carried state after continue-as-new."""

    carried: RunState | None = None
