"""Seeing the processes from outside: logs (``logs``), Prometheus metrics (``metrics``, and the
Temporal SDK's own in ``sdk``), health and metrics endpoints (``endpoint``), traces
(``tracing``). Used by the worker, the activities and the front doors; imports only settings
and schemas. The manual is docs/operations.md ("Observing it")."""
