# stillmotion on a GPU host: the web UI and REST API on port 7860, jobs in /data, model weights in /models.
#   docker build -t stillmotion .
#   docker run --gpus all -p 7860:7860 -e STILLMOTION_API_TOKEN=change-me \
#       -v stillmotion-data:/data -v stillmotion-models:/models stillmotion
# docs/docker.md has the details (and compose.yaml the several-worker setup).
#
# The CUDA "base" image, not "runtime" or "cudnn-runtime": PyPI's torch wheel for Linux brings its own CUDA
# and cuDNN libraries (the nvidia-* wheels), so those images' copies would only double the size. The base
# image keeps what the NVIDIA Container Toolkit reads (NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES);
# the host's driver is mounted in at run time.
FROM nvidia/cuda:12.6.3-base-ubuntu24.04

# Ubuntu 24.04's Python 3.12, in a virtual environment (the system Python is "externally managed").
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
ENV VIRTUAL_ENV=/opt/stillmotion \
    PATH=/opt/stillmotion/bin:$PATH \
    PYTHONUNBUFFERED=1
RUN python3 -m venv /opt/stillmotion

# Dependencies first, in their own layer, read from pyproject.toml alone (the package and its server and
# scale extras): a change to the code reuses this layer instead of downloading torch again.
WORKDIR /opt/stillmotion-src
COPY pyproject.toml ./
RUN python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; extras = p['optional-dependencies']; print('\n'.join(p['dependencies'] + extras['server'] + extras['scale']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the code, without touching the dependencies.
COPY README.md ./
COPY src ./src
RUN pip install --no-cache-dir --no-deps .

# Run as an unprivileged user that owns only the two volumes (bind mounts: see docs/docker.md).
RUN useradd --system --create-home --uid 10001 --user-group stillmotion \
    && mkdir -p /data /models \
    && chown stillmotion:stillmotion /data /models
USER 10001
WORKDIR /home/stillmotion

# Jobs, uploads, videos and logs in /data; the Hugging Face cache (weights) in /models. Binding all
# interfaces inside the container needs STILLMOTION_API_TOKEN: `stillmotion serve` refuses to start without it.
ENV STILLMOTION_DATA_DIR=/data \
    HF_HOME=/models \
    STILLMOTION_HOST=0.0.0.0 \
    STILLMOTION_PORT=7860
VOLUME ["/data", "/models"]
EXPOSE 7860

# Healthy while the API answers and accepts jobs (/api/v1/health needs no token); compose.yaml runs the same.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import json, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:7860/api/v1/health', timeout=4); raise SystemExit(0 if json.load(r)['accepting_jobs'] else 1)"]

CMD ["stillmotion", "serve"]
