# layerlab: the REST service, CPU-only. Build: docker build -t layerlab .  Run: docker run -p 8000:8000 layerlab
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/layerlab

# CPU-only torch from PyTorch's CPU index first: PyPI's default wheel would pull the multi-GB CUDA
# stack. The project's `torch>=2.2,<3` requirement is then already met.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# Every other dependency at the version and hashes in requirements.lock (refreshed by `bash .ci/lock`);
# this layer stays cached while only the code changes. torch, installed above, is not in the lock.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

COPY app ./app
RUN python -m compileall -q app

# An unprivileged user, by number so that Kubernetes' runAsNonRoot can check it.
RUN useradd --system --create-home --uid 10001 --user-group layerlab
USER 10001:10001

ENV LAYERLAB_HOST=0.0.0.0 \
    LAYERLAB_PORT=8000 \
    LAYERLAB_WORKERS=2
EXPOSE 8000

# Liveness: /healthz answers on the event loop, never behind compute. The slim image has no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LAYERLAB_PORT', '8000') + '/healthz', timeout=2)"]

# The README's run command; settings come from LAYERLAB_* variables (workers: LAYERLAB_WORKERS).
CMD ["python", "-m", "app.serve"]
