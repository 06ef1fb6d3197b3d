#!/usr/bin/env bash
# Builds KWOK (sigs.k8s.io/kwok/cmd/kwok, "Kubernetes WithOut Kubelet") from the Go module proxy
# and copies its fast Stage documents beside it, cached by version outside the repository.
# Prints the directory holding `kwok` and `stages/*.yaml` on its last line; progress goes to stderr.
#
# KWOK plays the kubelet of fake Nodes: it marks them Ready and moves their Pods to Running/Ready
# (and deletes them) as the Stages say, so Deployments really become Available in the sandbox.
# sigs.k8s.io/kwok has no replace directives, so a plain `go install module@version` builds it.
set -euo pipefail

KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
CACHE_ROOT="${MODEL_ROLLOUTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/model-rollouts}"
BIN_DIR="$CACHE_ROOT/bin/kwok-$KWOK_VERSION"
# Stages from the module's kustomize/stage/ folder: node-fast (a Node turns Ready at once) and
# pod-fast (a scheduled Pod turns Running and Ready at once; a deleted Pod goes at once).
STAGES=(node/fast/node-initialize.yaml pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml)

log() { echo "[build-kwok] $*" >&2; }

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/build-kwok.lock"
flock 9

start=$(date +%s)
if [[ -x "$BIN_DIR/kwok" && -d "$BIN_DIR/stages" ]]; then
  log "kwok $KWOK_VERSION: cached"
else
  log "kwok $KWOK_VERSION: building (a minute or two on 2 cores)"
  mkdir -p "$BIN_DIR/stages"
  CGO_ENABLED=0 GOFLAGS="-buildvcs=false" GOBIN="$BIN_DIR" \
    go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2
  module_dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  for stage in "${STAGES[@]}"; do
    cp "$module_dir/kustomize/stage/$stage" "$BIN_DIR/stages/$(basename "$stage")"
  done
  chmod u+w "$BIN_DIR"/stages/*.yaml  # the module cache is read-only
  log "kwok $KWOK_VERSION: built"
fi
log "done in $(( $(date +%s) - start ))s"
echo "$BIN_DIR"
