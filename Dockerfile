# fbmarket: the one image, for `fbmarket serve` (HTTP API and web page) and for training.
# Not built or run by CI (there is no Docker engine or registry there): see docs/deployment.md.
#
# Single machine (./compose.yaml): the bundle lives on a volume at /artifacts, which is the state.
#   docker build -t fbmarket .
#   docker run --rm -v "$PWD/artifacts:/artifacts" fbmarket python main.py --out /artifacts   # train
#   docker run --rm -p 8000:8000 -v "$PWD/artifacts:/artifacts" -e FBMARKET_API_KEY=change-me fbmarket
# Scaled out (deploy/compose.yaml, deploy/helm/fbmarket): stateless replicas over PostgreSQL +
# Milvus, the trained bundle mounted read-only at /bundle and the command
# `fbmarket serve --bundle /bundle`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    FBMARKET_HOST=0.0.0.0 \
    FBMARKET_PORT=8000

# libgomp1: the OpenMP runtime FAISS and TensorFlow need on the slim image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# The pinned set first (a layer that changes only with requirements.txt), then the package.
COPY requirements.txt ./
RUN pip install -r requirements.txt
COPY pyproject.toml README.md main.py ./
COPY fbmarket ./fbmarket
RUN pip install --no-deps .

# Non-root: the process owns its home and /artifacts (the single-machine bundle volume) only.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin fbmarket \
    && mkdir /artifacts && chown 10001:10001 /artifacts
USER 10001:10001
VOLUME /artifacts
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:8000/ready', timeout=4).status != 200)"]

# FBMARKET_API_KEY enables writes; FBMARKET_DATABASE_URL (PostgreSQL) and FBMARKET_INDEX_URI
# (milvus://host:19530) come from the environment (compose env_file / a Kubernetes Secret).
CMD ["fbmarket", "serve", "--bundle", "/artifacts"]
