# syntax=docker/dockerfile:1
# The pipeline's image: one image, every stage; the command picks the stage
# (`pipeline run validate`), the environment configures it (PIPELINE_*).

ARG PYTHON_IMAGE=python:3.13-slim

# --- builder: resolve and install the package into a self-contained venv -------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, in their own layer, from the lock file (the versions CI tested),
# so editing the code does not reinstall them; then the code on top without deps.
# (README.m[d] copies the README when there is one; the glob keeps COPY from failing.)
COPY pyproject.toml requirements.lock README.m[d] ./
RUN pip install -r requirements.lock

COPY pipeline ./pipeline
COPY schemas ./schemas
# Not editable: the final image copies /opt/venv alone, never /src.
RUN pip install --no-deps --force-reinstall . \
    && python -m compileall -q /opt/venv/lib

# --- runtime: the venv on a clean slim image, no compilers, no pip cache, not root ----
FROM ${PYTHON_IMAGE}

RUN groupadd --gid 10001 pipeline \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin pipeline

COPY --from=builder /opt/venv /opt/venv

# Where `pipeline api-token` keeps the development signing key of docker compose: a
# named volume mounted here starts out owned by the pipeline user.
RUN install -d -o 10001 -g 10001 -m 0750 /var/lib/pipeline/api-auth

# Bytecode was compiled in the builder; the root filesystem is read-only in Kubernetes.
# In a container the HTTP endpoint must listen beyond loopback to be probed and scraped.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIPELINE_HTTP_HOST=0.0.0.0 \
    PIPELINE_HTTP_PORT=8000

USER 10001:10001
WORKDIR /tmp
EXPOSE 8000

ENTRYPOINT ["pipeline"]
CMD ["run", "--all"]
