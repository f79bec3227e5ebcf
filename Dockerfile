# fbmarket: the HTTP API and web page (`fbmarket serve`) over a trained bundle.
# Not built or run by CI (there is no Docker engine there): keep it simple.
#
#   docker build -t fbmarket .
#   docker run --rm -v "$PWD/artifacts:/artifacts" fbmarket python main.py --out /artifacts   # train
#   docker run --rm -p 8000:8000 -v "$PWD/artifacts:/artifacts" -e FBMARKET_API_KEY=change-me fbmarket
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

# libgomp1: OpenMP runtime for FAISS and TensorFlow on the slim image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt ./
RUN pip install -r requirements.txt
COPY pyproject.toml README.md main.py ./
COPY fbmarket ./fbmarket
RUN pip install .

# The bundle (models, FAISS index, photo cache, SQLite file) lives on a volume: it is the state.
RUN useradd --create-home --uid 1000 fbmarket && mkdir /artifacts && chown fbmarket /artifacts
USER fbmarket
VOLUME /artifacts
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:8000/ready', timeout=4).status != 200)"]

# FBMARKET_API_KEY enables writes; FBMARKET_DATABASE_URL points at PostgreSQL instead of the bundle's SQLite.
CMD ["fbmarket", "serve", "--bundle", "/artifacts", "--host", "0.0.0.0", "--port", "8000"]
