# syntax=docker/dockerfile:1
# The escalations image: worker, API and migrate job (docker-compose.yml). Runtime
# dependencies only, installed from the hash-pinned lock (`make lock` refreshes it); no dev
# server, no embedded PostgreSQL, no matplotlib, no benchmarks, no build tools.

# -- build: the project's wheel and a virtualenv holding exactly the lock -------------------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements-build.lock requirements.lock ./
RUN python -m pip install --require-hashes --no-deps -r requirements-build.lock \
 && python -m venv /opt/escalations \
 && /opt/escalations/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md LICENSE ./
COPY workflows workflows
COPY activities activities
COPY schemas schemas
COPY escalations escalations
COPY worker.py starter.py ./
# The project itself: built without fetching anything (setuptools comes from the build lock),
# installed without dependencies (the lock has them all).
RUN python -m pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && /opt/escalations/bin/pip install --no-deps /wheels/*.whl

# -- runtime ------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime
ENV PATH=/opt/escalations/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ESCALATION_METRICS_PORT=9464
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin escalations
COPY --from=build /opt/escalations /opt/escalations
COPY --chmod=755 docker/entrypoint.sh /usr/local/bin/escalations-entrypoint
USER escalations
WORKDIR /tmp
# The worker's /livez (docker-compose.yml checks /readyz of the worker and the API itself).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ['ESCALATION_METRICS_PORT'], timeout=4)"]
ENTRYPOINT ["escalations-entrypoint"]
CMD ["escalations", "worker"]
