# The streaminfer image: worker, producers and CLI. Runs as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

RUN apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# dependencies first, so code and README edits do not reinstall torch
COPY pyproject.toml ./
RUN mkdir -p pipeline consumers producers schemas devtools \
    && touch README.md pipeline/__init__.py consumers/__init__.py producers/__init__.py schemas/__init__.py \
       devtools/__init__.py \
    && pip install . && pip uninstall -y streaminfer

COPY README.md ./
COPY pipeline ./pipeline
COPY consumers ./consumers
COPY producers ./producers
COPY schemas ./schemas
COPY devtools ./devtools
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 streaminfer

# the worker serves /metrics, /healthz and /readyz here; the HEALTHCHECK asks /healthz
# (its event loop answers it: a stuck loop or a dead process does not); the check imports
# nothing heavy
ENV STREAMINFER_METRICS_PORT=9400
EXPOSE 9400
HEALTHCHECK --interval=15s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-m", "pipeline.health"]

USER streaminfer
# tini as PID 1: a process that is PID 1 ignores SIGTERM until it installs a handler, so a
# stop during start-up would wait out the grace period and end in SIGKILL
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["streaminfer", "worker"]
