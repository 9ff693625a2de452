# labelpilot API / RQ worker image: `docker build -t labelpilot .` (deploy/compose.yaml builds it the same way).
# The same image runs both processes: the default command is `labelpilot serve`; the worker runs
# `labelpilot worker`. Settings are environment variables (src/labelpilot/config.py, `labelpilot serve --help`).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# the extras a server needs: PostgreSQL shared state, similarity search (/v1/indexes, /v1/faq), Parquet input.
# Add vision,ocr,video for image, document and video projects (torch makes the image ~1 GB larger).
ARG EXTRAS=postgres,retrieval,parquet
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN /opt/venv/bin/pip install "/src[${EXTRAS}]"
# the text encoder's model file (zero-shot text pre-labels) is an install step, never run by the server
ENV LABELPILOT_CACHE_DIR=/opt/labelpilot-cache
RUN /opt/venv/bin/labelpilot encoder fetch

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 labelpilot \
 && useradd --system --uid 10001 --gid labelpilot --home-dir /home/labelpilot --create-home labelpilot \
 && mkdir -p /data && chown labelpilot:labelpilot /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/labelpilot-cache /opt/labelpilot-cache
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LABELPILOT_CACHE_DIR=/opt/labelpilot-cache \
    LABELPILOT_HOST=0.0.0.0 \
    LABELPILOT_PORT=9090 \
    LABELPILOT_DATA_DIR=/data \
    LOG_LEVEL=INFO
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 9090
# /health needs no credentials (basic auth protects everything else); the slim image has no curl
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LABELPILOT_PORT', '9090') + '/health', timeout=4)"]
CMD ["labelpilot", "serve"]
