# syntax=docker/dockerfile:1
# The analysts' Dash app under gunicorn (dashboard.wsgi:server) on port 8050.
#   docker build -f docker/dashboard.Dockerfile -t ghcr.io/pefm/dashboard:0.1.0 .     (from the repository root)
# The base is pinned by exact tag; add its digest (python:3.11.14-slim-bookworm@sha256:...) where you pull it.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY docker/locks/dashboard.txt /tmp/lock.txt
RUN /opt/venv/bin/pip install --require-hashes --no-deps --only-binary :all: -r /tmp/lock.txt
COPY pyproject.toml README.md /src/
COPY src/ /src/src/
RUN /opt/venv/bin/pip install --no-deps /src

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 pefm && useradd --uid 10001 --gid 10001 --create-home pefm
COPY --from=builder /opt/venv /opt/venv
COPY dashboard/ /app/dashboard/
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PEFM_DASHBOARD_PORT=8050
USER 10001:10001
EXPOSE 8050
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['PEFM_DASHBOARD_PORT'], timeout=2)"]
CMD ["sh", "-c", "exec gunicorn --bind 0.0.0.0:${PEFM_DASHBOARD_PORT} --workers 2 --threads 4 --access-logfile - dashboard.wsgi:server"]
