#!/usr/bin/env bash
# Fetches the CRDs of the routers the controller can drive besides the Gateway API (Istio's
# VirtualService and DestinationRule, KServe's InferenceService) from pinned Go modules, into the
# cache the control-plane build uses. Prints the directory holding them on its last line; progress
# goes to stderr. localenv/router_crds.py installs them into a running test control plane.
#
# Why from Go modules: these machines reach the Go module proxy but no release download site
# (see ../shared/reference/gateways-and-routers.md). `go mod download` checks each module against
# the Go checksum database; on top of that each file copied is pinned by its sha256, so a changed
# module, a corrupt cache or a hand-edited copy is refused instead of installed.
# Idempotent: a copy already in the cache with the pinned sha256 is kept, and nothing is
# downloaded (about 10 ms). Concurrent runs wait for each other on a lock file.
#
# Output: $CACHE_ROOT/crds/istio-api-v1.32.0/customresourcedefinitions.gen.yaml (15 CRDs, about
# 1 MB) and $CACHE_ROOT/crds/kserve-v0.17.0/serving.kserve.io_inferenceservices.yaml (1.1 MB: apply
# it server-side, it is larger than the annotation client-side apply keeps).
set -euo pipefail

CACHE_ROOT="${MODEL_ROLLOUTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/model-rollouts}"
CRD_DIR="$CACHE_ROOT/crds"

# name | module@version | file in the module | sha256 of that file
PINNED=(
  "istio-api-v1.32.0|istio.io/api@v1.32.0|kubernetes/customresourcedefinitions.gen.yaml|c65d3908ee5eefea7cb5f3baad2622455fd7b483e920ee428500b44da73f2601"
  "kserve-v0.17.0|github.com/kserve/kserve@v0.17.0|config/crd/full/serving.kserve.io_inferenceservices.yaml|b6c30a83b771f791e5de3a30d46ddd2f44e3caeffdc8c132e7c8c145ab209dae"
)

log() { echo "[fetch-router-crds] $*" >&2; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

module_dir() {
  # Run outside any Go module or workspace, so that neither can change what is downloaded.
  (cd "$CACHE_ROOT" && GOWORK=off GOFLAGS=-mod=mod go mod download -json "$1") |
    python3 -c 'import json,sys; info = json.load(sys.stdin); sys.exit(info.get("Error")) if info.get("Error") else print(info["Dir"])'
}

fetch() {
  local name="$1" module="$2" file="$3" sha256="$4"
  local target="$CRD_DIR/$name/$(basename "$file")"
  if [[ -f "$target" && "$(sha256_of "$target")" == "$sha256" ]]; then
    log "$module $file: cached"
    return
  fi
  log "$module: downloading"
  local dir
  dir=$(module_dir "$module")
  local found
  found=$(sha256_of "$dir/$file")
  if [[ "$found" != "$sha256" ]]; then
    log "$module $file has sha256 $found, not the pinned $sha256: refusing it"
    exit 1
  fi
  mkdir -p "$CRD_DIR/$name"
  # Copy then rename, so that a reader never sees half a file.
  cp "$dir/$file" "$target.tmp.$$"
  chmod u+w "$target.tmp.$$"  # the module cache is read-only
  mv -f "$target.tmp.$$" "$target"
  log "$module $file: copied to $target"
}

mkdir -p "$CRD_DIR"
exec 9>"$CACHE_ROOT/fetch-router-crds.lock"
flock 9

start=$(date +%s)
for entry in "${PINNED[@]}"; do
  IFS='|' read -r name module file sha256 <<<"$entry"
  fetch "$name" "$module" "$file" "$sha256"
done
log "done in $(( $(date +%s) - start ))s"
echo "$CRD_DIR"
