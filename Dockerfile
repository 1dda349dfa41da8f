# syntax=docker/dockerfile:1
#
# One image for every Crossdock service; the argument picks the service:
#
#   docker build -t crossdock:0.1.0 .
#   docker run --rm crossdock:0.1.0 erp            # = python -m services.erp
#   docker run --rm crossdock:0.1.0 gateway        # = python -m gateway (the experience layer)
#   docker run --rm crossdock:0.1.0 crossdock orders   # the operator CLI
#
# The build mirrors the Makefile: a venv from requirements.lock, the Protobuf
# code generated into gen/ exactly as `make proto` does (the $(GEN) target),
# the project installed in editable mode (for the `crossdock` script) and gen/
# put on the path with a .pth file. Kubernetes manifests: deploy/k8s/.
#
# Runtime: non-root (uid/gid 10001), read-only root filesystem friendly:
# nothing is written outside $CROSSDOCK_DATA_DIR (/data, a volume or emptyDir)
# and /tmp; bytecode is compiled at build time and never written at run time.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

WORKDIR /app
RUN python -m venv /opt/venv

# Dependencies first: this layer is reused until requirements.lock changes.
COPY requirements.lock ./
RUN pip install -r requirements.lock

COPY pyproject.toml README.md ./
COPY proto ./proto
COPY services ./services
COPY gateway ./gateway
COPY deploy/docker ./deploy/docker

# Same command as the Makefile's $(GEN) target (buf lint runs in CI, not here).
RUN mkdir -p gen \
 && python -m grpc_tools.protoc -I proto --python_out=gen --pyi_out=gen --grpc_python_out=gen \
      $(find proto -name '*.proto' | sort) \
 && pip install --no-deps --no-build-isolation -e . \
 && echo "/app/gen" > "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/crossdock_gen.pth" \
 && python -m compileall -q -j 0 /app/services /app/gateway /app/gen /app/deploy/docker \
 && python -c "import services.mesh.contracts"

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="crossdock" \
      org.opencontainers.image.description="Crossdock services (erp, wms, tms, ordertoship): one image, the argument picks the service"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CROSSDOCK_DATA_DIR=/data \
    CROSSDOCK_GRPC_HOST=0.0.0.0 \
    CROSSDOCK_LOG_FORMAT=json \
    CROSSDOCK_SECRETS_DIR=/etc/crossdock/secrets

RUN groupadd --gid 10001 crossdock \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin crossdock \
 && mkdir -p /data \
 && chown 10001:10001 /data

# Same paths as in the builder: the venv and the editable install point there.
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app

WORKDIR /app
USER 10001:10001
VOLUME ["/data"]
# Every service listens on CROSSDOCK_GRPC_PORT (Kubernetes: 50051 for all);
# without it, on its default port (erp 50051, wms 50052, tms 50053, ordertoship 50054).
EXPOSE 50051 50052 50053 50054

ENTRYPOINT ["/opt/venv/bin/python", "/app/deploy/docker/entrypoint.py"]
CMD ["--help"]
