# syntax=docker/dockerfile:1
# The attnserve gateway: gRPC :8500, HTTP/JSON API and web page :8501, metrics :8502.
# Multi-stage: wheels are built in the first stage; the final image has no compiler, no pip
# cache and no torch (the gateway needs neither torch nor onnx: `attnserve[gateway]`).
#   docker build -f deploy/gateway.Dockerfile -t attnserve-gateway:0.1.0 .

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY attnserve ./attnserve
COPY export ./export
COPY server ./server
COPY clients ./clients
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels ".[gateway]"

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ATTNSERVE_GATEWAY__HOST=0.0.0.0
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin attnserve
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --no-index --find-links=/wheels "attnserve[gateway]==0.1.0" \
    && rm -rf /wheels
USER 10001:10001
EXPOSE 8500 8501 8502
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/ready', timeout=3)"]
ENTRYPOINT ["attnserve"]
CMD ["gateway", "--triton-url", "triton:8001", "--host", "0.0.0.0"]
