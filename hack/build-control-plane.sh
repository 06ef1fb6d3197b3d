#!/usr/bin/env bash
# Builds pinned Kubernetes control-plane binaries and etcd from Go modules and caches them by
# version outside the repository. Prints the directory holding the binaries on its last line.
#
# Why from Go modules: these machines reach the Go module proxy but no release download site.
# Honours KUBEBUILDER_ASSETS: when it names a directory holding kube-apiserver, etcd and kubectl,
# nothing is built; the printed directory then links to those binaries and holds the fetched CRDs,
# so callers always find binaries and crds/ side by side.
# Concurrent runs (several test sessions on a cold cache) wait for each other on a lock file.
set -euo pipefail

KUBERNETES_VERSION="${KUBERNETES_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.4.1}"
CACHE_ROOT="${MODEL_ROLLOUTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/model-rollouts}"
K8S_BINARIES=(kube-apiserver kubectl kube-controller-manager kube-scheduler)

log() { echo "[build-control-plane] $*" >&2; }

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/build.lock"
flock 9

if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/kube-apiserver" && -x "$KUBEBUILDER_ASSETS/etcd" && -x "$KUBEBUILDER_ASSETS/kubectl" ]]; then
  assets=$(cd "$KUBEBUILDER_ASSETS" && pwd -P)
  log "using KUBEBUILDER_ASSETS=$assets"
  BIN_DIR="$CACHE_ROOT/bin/kubebuilder-assets-$(printf '%s' "$assets" | sha256sum | cut -c1-12)"
  mkdir -p "$BIN_DIR"
  for binary in "$assets"/*; do
    if [[ -f "$binary" && -x "$binary" ]]; then ln -sfn "$binary" "$BIN_DIR/$(basename "$binary")"; fi
  done
else
  BIN_DIR="$CACHE_ROOT/bin/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION"
  mkdir -p "$BIN_DIR"
fi
export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=mod"

build_kubernetes() {
  local missing=()
  for b in "${K8S_BINARIES[@]}"; do [[ -x "$BIN_DIR/$b" ]] || missing+=("$b"); done
  if [[ ${#missing[@]} -eq 0 ]]; then log "kubernetes $KUBERNETES_VERSION: cached"; return; fi
  log "kubernetes $KUBERNETES_VERSION: building ${missing[*]} (several minutes on 2 cores)"
  local work="$CACHE_ROOT/work/kubernetes-$KUBERNETES_VERSION"
  rm -rf "$work" && mkdir -p "$work" && cd "$work"
  go mod init local/kubernetes-build >/dev/null 2>&1
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  local minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  local staging_version="v0.${KUBERNETES_VERSION#v1.}"
  # k8s.io/kubernetes replaces each staging module with a local path; point them at published tags.
  local replaces=()
  while read -r module; do
    replaces+=("-replace=$module=$module@$staging_version")
  done < <(grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" | awk '{print $1}')
  go mod edit "${replaces[@]}"
  local godebug
  godebug=$(sed -n '/^godebug/,/^)/p' "$gomod")
  [[ -n "$godebug" ]] && printf '\n%s\n' "$godebug" >> go.mod
  go get "k8s.io/kubernetes@$KUBERNETES_VERSION" >&2
  local pkgs=() ldflags=""
  for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  go build -trimpath -ldflags "-s -w $ldflags" -o "$BIN_DIR/" "${pkgs[@]}" >&2
  log "kubernetes $KUBERNETES_VERSION: built"
}

build_etcd() {
  if [[ -x "$BIN_DIR/etcd" ]]; then log "etcd $ETCD_VERSION: cached"; return; fi
  log "etcd $ETCD_VERSION: building"
  local work="$CACHE_ROOT/work/etcd-$ETCD_VERSION"
  rm -rf "$work" && mkdir -p "$work" && cd "$work"
  go mod init local/etcd-build >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
  go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd" go.etcd.io/etcd/server/v3 >&2
  log "etcd $ETCD_VERSION: built"
}

fetch_gateway_api_crds() {
  local target="$BIN_DIR/crds/gateway-api-$GATEWAY_API_VERSION"
  if [[ -f "$target/httproutes.yaml" ]]; then return; fi
  mkdir -p "$target"
  local dir
  dir=$(go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  cp "$dir/config/crd/standard/gateway.networking.k8s.io_httproutes.yaml" "$target/httproutes.yaml"
  log "gateway-api $GATEWAY_API_VERSION: HTTPRoute CRD copied"
}

start=$(date +%s)
if [[ -z "${assets:-}" ]]; then
  build_etcd
  build_kubernetes
fi
fetch_gateway_api_crds
log "done in $(( $(date +%s) - start ))s"
echo "$BIN_DIR"
