#!/usr/bin/env bash
# Builds a pinned helm from Go modules and caches it by version outside the repository.
# Prints the directory holding the `helm` binary on its last line.
#
# Why from Go modules: these machines reach the Go module proxy but no release download site.
# Honours HELM_BIN: when it names an executable helm, nothing is built and its directory is printed.
# Concurrent runs wait for each other on the same lock file as hack/build-control-plane.sh.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE_ROOT="${MODEL_ROLLOUTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/model-rollouts}"

log() { echo "[build-helm] $*" >&2; }

if [[ -n "${HELM_BIN:-}" && -x "$HELM_BIN" ]]; then
  log "using HELM_BIN=$HELM_BIN"
  dirname "$(realpath "$HELM_BIN")"
  exit 0
fi

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/build.lock"
flock 9

BIN_DIR="$CACHE_ROOT/bin/helm-$HELM_VERSION"
if [[ -x "$BIN_DIR/helm" ]]; then
  log "helm $HELM_VERSION: cached"
  echo "$BIN_DIR"
  exit 0
fi

start=$(date +%s)
log "helm $HELM_VERSION: building (a few minutes on 2 cores)"
export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=mod"
work="$CACHE_ROOT/work/helm-$HELM_VERSION"
rm -rf "$work" && mkdir -p "$work" && cd "$work"
go mod init local/helm-build >/dev/null 2>&1
go get "helm.sh/helm/v3@$HELM_VERSION" >&2
# helm's Makefile stamps its version and the Kubernetes version its client libraries speak; without
# the latter, `helm template` and `helm lint` assume Kubernetes 1.20.
client_go=$(go list -m -f '{{.Version}}' k8s.io/client-go)
k8s_minor="${client_go#v0.}"; k8s_minor="${k8s_minor%%.*}"
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$k8s_minor"
done
mkdir -p "$BIN_DIR"
go build -trimpath -ldflags "$ldflags" -o "$BIN_DIR/helm" helm.sh/helm/v3/cmd/helm >&2
log "helm $HELM_VERSION: built in $(( $(date +%s) - start ))s"
echo "$BIN_DIR"
