# syntax=docker/dockerfile:1
# The monitor function (drift checks; Evidently lives only in this image): func-python's serve(new)
# on LISTEN_ADDRESS, as kn func runs it. Every drift check loads the serving model, so it has torch
# (an mlp model's pickle imports it): the CPU build, from download.pytorch.org/whl/cpu as its lock names.
#   docker build -f docker/monitor.Dockerfile -t ghcr.io/pefm/monitor:0.1.0 .     (from the repository root)
# The base is pinned by exact tag; add its digest (python:3.11.14-slim-bookworm@sha256:...) where you pull it.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY docker/locks/monitor.txt /tmp/lock.txt
RUN /opt/venv/bin/pip install --require-hashes --no-deps --only-binary :all: -r /tmp/lock.txt
COPY pyproject.toml README.md /src/
COPY src/ /src/src/
RUN /opt/venv/bin/pip install --no-deps /src

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 pefm && useradd --uid 10001 --gid 10001 --create-home pefm
COPY --from=builder /opt/venv /opt/venv
COPY functions/monitor/function/ /app/function/
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 LISTEN_ADDRESS=0.0.0.0:8080
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health/readiness', timeout=2)"]
CMD ["python", "-c", "from function import new; from func_python.http import serve; serve(new)"]
