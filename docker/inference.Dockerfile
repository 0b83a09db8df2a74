# syntax=docker/dockerfile:1
# The inference function: func-python's serve(new) on LISTEN_ADDRESS, as kn func runs it. Also the
# image of everything else PEFM runs in the cluster with the `pefm` command: the rollout API
# (`pefm serve rollout`, knative/rollout/), the bootstrap Job (`pefm bootstrap`) and the retraining
# CronJob (`pefm retrain`, knative/jobs/). So its lock holds the `cluster` extra (the kubernetes
# client) and the image holds the rollout spec at /etc/pefm/rollout.yaml (PEFM_ROLLOUT_SPEC), the
# same knative/rollout.yaml the Flagger Canary is rendered from. From the repository root:
#   docker build -f docker/inference.Dockerfile -t ghcr.io/pefm/inference:0.1.0 .
#   docker build -f docker/inference.Dockerfile --build-arg VARIANT=cuda -t ghcr.io/pefm/inference:0.1.0-cuda .
# VARIANT=cpu: torch's CPU build (its lock names download.pytorch.org/whl/cpu); VARIANT=cuda: PyPI's
# torch, whose CUDA libraries come as nvidia-* wheels (the host needs only the NVIDIA driver).
# The base is pinned by exact tag; add its digest (python:3.11.14-slim-bookworm@sha256:...) where you pull it.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG VARIANT=cpu

FROM ${PYTHON_IMAGE} AS builder
ARG VARIANT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY docker/locks/inference-${VARIANT}.txt /tmp/lock.txt
RUN /opt/venv/bin/pip install --require-hashes --no-deps --only-binary :all: -r /tmp/lock.txt
COPY pyproject.toml README.md /src/
COPY src/ /src/src/
RUN /opt/venv/bin/pip install --no-deps /src

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --gid 10001 pefm && useradd --uid 10001 --gid 10001 --create-home pefm
COPY --from=builder /opt/venv /opt/venv
COPY functions/inference/function/ /app/function/
COPY knative/rollout.yaml /etc/pefm/rollout.yaml
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 LISTEN_ADDRESS=0.0.0.0:8080 \
    PEFM_ROLLOUT_SPEC=/etc/pefm/rollout.yaml
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health/readiness', timeout=2)"]
CMD ["python", "-c", "from function import new; from func_python.http import serve; serve(new)"]

FROM runtime AS runtime-cpu

FROM runtime AS runtime-cuda
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility

FROM runtime-${VARIANT}
