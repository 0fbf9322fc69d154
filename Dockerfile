FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY workflows workflows
COPY activities activities
COPY schemas schemas
COPY escalations escalations
COPY worker.py starter.py ./
RUN pip install --no-cache-dir . && useradd --system --uid 10001 escalations
USER escalations
CMD ["escalations", "worker"]
