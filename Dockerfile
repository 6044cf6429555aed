# The streaminfer image: worker, producers and CLI. Runs as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# dependencies first, so code edits do not reinstall torch
COPY pyproject.toml README.md ./
RUN mkdir -p pipeline consumers producers schemas \
    && touch pipeline/__init__.py consumers/__init__.py producers/__init__.py schemas/__init__.py \
    && pip install . && pip uninstall -y streaminfer

COPY pipeline ./pipeline
COPY consumers ./consumers
COPY producers ./producers
COPY schemas ./schemas
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 streaminfer

USER streaminfer
ENTRYPOINT []
CMD ["streaminfer", "worker"]
