# syntax=docker/dockerfile:1
# One image for every component of fmbench-k8s (the Helm chart runs it as the operator, and the
# operator runs it in the pods it creates):
#   fmbench-k8s operator --namespace NS | --all-namespaces    the Kubernetes operator (kopf)
#   fmbench-k8s loadgen master|worker ...                      Locust load generator pods
#   fmbench-k8s analyze ...                                    the analysis Job
#   fmbench-k8s simulate ...                                   the model-server simulator
#
# Base pinned by exact tag. For reproducible release builds pin the digest as well:
#   docker buildx imagetools inspect python:3.11.13-slim-bookworm   # -> sha256:...
#   ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
# The builder compiles the C parts (setup.py: C_PARTS): the full image of the same Python has gcc;
# the wheel it builds runs on the slim one.
ARG BUILDER_IMAGE=python:3.11.13-bookworm

# ---------------------------------------------------------------- builder: the wheel
FROM ${BUILDER_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY . /src
# operator/, loadgen/ and analysis/ are reached through symlinks in fmbench_k8s/; the wheel
# holds them as real files (tests/chart/test_image.py checks the same build).
RUN pip wheel --no-deps -w /dist .

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
# Non-root, numeric (runAsNonRoot can verify it); the chart and the operator's pods run as 10001
# with a read-only root filesystem: only /tmp (an emptyDir) is writable.
RUN groupadd --system --gid 10001 fmbench \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin fmbench
COPY --from=builder /dist /dist
# A current pip first: older resolvers backtrack through botocore/matplotlib releases for minutes
# and then give up (ResolutionImpossible) on this dependency set.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --upgrade "pip>=25,<27" \
    && /opt/venv/bin/pip install --no-cache-dir /dist/*.whl \
    && rm -rf /dist
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 9646 5557 8000
ENTRYPOINT ["fmbench-k8s"]
CMD ["--help"]
