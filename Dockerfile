# The model-rollouts controller image: Python 3.11 slim, the package in a virtualenv, non-root.
#   docker build -t model-rollouts-controller:0.1.0 .
# The base is pinned to an exact release tag; pin it by digest too where your registry policy asks
# for it (docker buildx imagetools inspect python:3.11.13-slim-bookworm prints the digest).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller ./controller
RUN python -m venv /opt/model-rollouts \
 && /opt/model-rollouts/bin/pip install --no-compile .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="model-rollouts-controller" \
      org.opencontainers.image.description="Canaries ML model versions through a Gateway API HTTPRoute" \
      org.opencontainers.image.licenses="Apache-2.0"
# 65532 is the conventional "nonroot" id; the chart's securityContext runs as it too.
RUN groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin nonroot
COPY --from=build /opt/model-rollouts /opt/model-rollouts
ENV PATH=/opt/model-rollouts/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["model-rollouts-controller"]
