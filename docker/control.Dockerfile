# syntax=docker/dockerfile:1
# The pefm command for the local stack: the rollout API (the default command), the local traffic
# router (`python -m pefm.local.router --service inference`), migrations, data loading and training.
# The rollout API loads a canary's two models to measure their divergence and training may fit an
# mlp, so it has torch: the CPU build, from download.pytorch.org/whl/cpu as its lock names.
#   docker build -f docker/control.Dockerfile -t ghcr.io/pefm/control:0.1.0 .     (from the repository root)
# The base is pinned by exact tag; add its digest (python:3.11.14-slim-bookworm@sha256:...) where you pull it.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY docker/locks/control.txt /tmp/lock.txt
RUN /opt/venv/bin/pip install --require-hashes --no-deps --only-binary :all: -r /tmp/lock.txt
COPY pyproject.toml README.md /src/
COPY src/ /src/src/
RUN /opt/venv/bin/pip install --no-deps /src

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 pefm && useradd --uid 10001 --gid 10001 --create-home pefm
COPY --from=builder /opt/venv /opt/venv
COPY knative/rollout.yaml /etc/pefm/rollout.yaml
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 LISTEN_ADDRESS=0.0.0.0:8080 \
    PEFM_ROLLOUT_SPEC=/etc/pefm/rollout.yaml
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"]
CMD ["pefm", "serve", "rollout", "--host", "0.0.0.0", "--port", "8080"]
