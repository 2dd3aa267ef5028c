#!/usr/bin/env bash
# Build the binaries of the test control plane (no Docker, no prebuilt downloads):
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy, etcd, kwok, helm and
# versitygw (the S3 server of the object-storage tests, posix backend),
# all from the Go module proxy, into a cache outside the repository:
#
#   ${SMARTTHUMB_TESTBIN:-$HOME/.cache/smartthumb/testbin}/<k8s-version>/bin
#
# The Kubernetes binaries cannot be `go install`ed (k8s.io/kubernetes points its k8s.io/*
# staging modules at ./staging with replace directives), so a wrapper go.mod is generated in
# the cache that requires k8s.io/kubernetes and replaces each k8s.io/* module it lists at
# v0.0.0 with the published v0.<minor>.<patch>. Nothing here is committed to the repository.
#
# Idempotent: every tool has a stamp file; when all are present the script exits at once.
# Prints the directory of the binaries on its last line of output (stdout).
#
# Usage: hack/testbin.sh [--print-dir]
# Env: SMARTTHUMB_TESTBIN  cache root (default ~/.cache/smartthumb/testbin)
#      TESTBIN_FORCE=1      rebuild even if stamps are present
#      TESTBIN_ONLY="a b"   build only these tools (kubernetes etcd kwok helm versitygw)
#      TESTBIN_KEEP_GOING=1 exit 0 even if a tool failed to build (the failure is recorded in
#                           bin/.stamps/<tool>.failed and the test fixture reports it)
#      K8S_VERSION, ETCD_VERSION, KWOK_VERSION, HELM_VERSION, VERSITYGW_VERSION  override the
#                           pinned versions
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}      # go.mod says go 1.26.0; podFailurePolicy GA since 1.31
ETCD_VERSION=${ETCD_VERSION:-v3.6.8}     # the etcd release k8s.io/kubernetes $K8S_VERSION pins
KWOK_VERSION=${KWOK_VERSION:-v0.7.0}
HELM_VERSION=${HELM_VERSION:-v3.18.6}
VERSITYGW_VERSION=${VERSITYGW_VERSION:-v1.8.0}

ROOT=${SMARTTHUMB_TESTBIN:-$HOME/.cache/smartthumb/testbin}
BASE=$ROOT/$K8S_VERSION
BIN=$BASE/bin
SRC=$BASE/src
STAMPS=$BIN/.stamps
LOGS=$BASE/logs

if [[ ${1:-} == --print-dir ]]; then  # where the binaries are (or will be); builds nothing
    echo "$BIN"
    exit 0
fi
mkdir -p "$BIN" "$SRC" "$STAMPS" "$LOGS"

export CGO_ENABLED=0
export GOFLAGS="-mod=mod -buildvcs=false"
export GOPROXY=${GOPROXY:-https://proxy.golang.org,direct}

log() { printf '[testbin %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

have() {  # have TOOL VERSION BINARIES... -> 0 when the stamp matches and the binaries exist
    local tool=$1 version=$2; shift 2
    [[ ${TESTBIN_FORCE:-0} == 1 ]] && return 1
    [[ -f $STAMPS/$tool ]] && [[ $(head -n1 "$STAMPS/$tool") == "$version" ]] || return 1
    local b; for b in "$@"; do [[ -x $BIN/$b ]] || return 1; done
}

wanted() { [[ -z ${TESTBIN_ONLY:-} ]] || [[ " $TESTBIN_ONLY " == *" $1 "* ]]; }

stamp() {  # stamp TOOL VERSION SECONDS
    printf '%s\nbuilt %s in %ss with %s\n' "$2" "$(date -u +%FT%TZ)" "$3" "$(go version)" >"$STAMPS/$1"
}

command -v go >/dev/null || { log "go is not installed"; exit 1; }
T0=$SECONDS
FAILED=()

# --- kube-apiserver, kube-controller-manager, kube-scheduler, kubectl -------------------------
K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
build_kubernetes() {
    local dir=$SRC/kubernetes minor major staging_version t=$SECONDS
    major=${K8S_VERSION#v}; major=${major%%.*}
    minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
    staging_version="v0.${K8S_VERSION#v*.}"
    mkdir -p "$dir"
    log "kubernetes $K8S_VERSION: writing wrapper module $dir/go.mod"
    local upstream
    upstream=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p') || return 1
    [[ -f $upstream ]] || { log "could not download k8s.io/kubernetes@$K8S_VERSION"; return 1; }
    {
        echo "module smartthumb.local/testbin/kubernetes"
        echo
        grep -E '^go [0-9.]+$' "$upstream"
        echo
        echo "require k8s.io/kubernetes $K8S_VERSION"
        echo
        echo "replace ("
        # every k8s.io/* module that upstream lists at v0.0.0 is a staging module
        awk '/^\tk8s.io\/[^ ]+ v0\.0\.0$/ {print "\t" $1 " => " $1 " '"$staging_version"'"}' "$upstream"
        echo ")"
    } >"$dir/go.mod"
    cat >"$dir/tools.go" <<'GO'
// Package testbin only anchors the wrapper module; the binaries are built by package path.
package testbin
GO
    local pkgs=() b
    for b in "${K8S_BINS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
    local v=k8s.io/component-base/version c=k8s.io/client-go/pkg/version ldflags="-s -w"
    local date; date=$(date -u +%FT%TZ)
    for p in $v $c; do
        ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
        ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$date"
    done
    log "kubernetes $K8S_VERSION: go build ${K8S_BINS[*]} (one invocation; tens of minutes cold)"
    (cd "$dir" && go build -trimpath -pgo=off -ldflags "$ldflags" -o "$BIN/" "${pkgs[@]}") || return 1
    stamp kubernetes "$K8S_VERSION" $((SECONDS - t))
    log "kubernetes $K8S_VERSION: built in $((SECONDS - t))s"
}

# --- etcd --------------------------------------------------------------------------------------
build_etcd() {
    local dir=$SRC/etcd t=$SECONDS
    mkdir -p "$dir"
    log "etcd $ETCD_VERSION: writing wrapper module $dir/go.mod"
    printf 'module smartthumb.local/testbin/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
        "$ETCD_VERSION" >"$dir/go.mod"
    printf '// Package testbin only anchors the wrapper module.\npackage testbin\n' >"$dir/tools.go"
    log "etcd $ETCD_VERSION: go build go.etcd.io/etcd/server/v3"
    (cd "$dir" && go build -trimpath -pgo=off -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3) || return 1
    stamp etcd "$ETCD_VERSION" $((SECONDS - t))
    log "etcd $ETCD_VERSION: built in $((SECONDS - t))s"
}

# --- kwok, helm, versitygw: plain go install -------------------------------------------------------------
go_install() {  # go_install TOOL VERSION PACKAGE VERSION_SYMBOL
    local tool=$1 version=$2 package=$3 symbol=$4 t=$SECONDS
    log "$tool $version: go install $package@$version"
    GOFLAGS=-buildvcs=false GOBIN=$BIN go install -trimpath -pgo=off \
        -ldflags "-s -w -X $symbol=$version" "$package@$version" || return 1
    stamp "$tool" "$version" $((SECONDS - t))
    log "$tool $version: built in $((SECONDS - t))s"
}

build_kwok() {
    go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/pkg/consts.Version
}

build_helm() {
    go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm helm.sh/helm/v3/internal/version.version
}

build_versitygw() {
    go_install versitygw "$VERSITYGW_VERSION" github.com/versity/versitygw/cmd/versitygw \
        main.Version
}

run() {  # run TOOL VERSION BINARIES...
    local tool=$1 version=$2; shift 2
    wanted "$tool" || return 0
    if have "$tool" "$version" "$@"; then
        log "$tool $version: cached ($(sed -n 2p "$STAMPS/$tool"))"
        return 0
    fi
    rm -f "$STAMPS/$tool.failed"
    if ! "build_$tool" 2>&1 | tee "$LOGS/$tool.log" >&2; then
        tail -n 40 "$LOGS/$tool.log" >"$STAMPS/$tool.failed"
        log "$tool $version: BUILD FAILED (see the error above, $LOGS/$tool.log); the other tools are kept"
        FAILED+=("$tool")
    fi
}

main() {
    run kubernetes "$K8S_VERSION" "${K8S_BINS[@]}"
    run etcd "$ETCD_VERSION" etcd
    run kwok "$KWOK_VERSION" kwok
    run helm "$HELM_VERSION" helm
    run versitygw "$VERSITYGW_VERSION" versitygw

    if ((SECONDS - T0 > 5)); then
        log "done in $((SECONDS - T0))s"
        log "sizes: $(du -sh "$BIN" | cut -f1) binaries in $BIN; $(du -sh "$BASE" | cut -f1) in $BASE;" \
            "Go caches: $(du -sh "$(go env GOMODCACHE)" | cut -f1) GOMODCACHE, $(du -sh "$(go env GOCACHE)" | cut -f1) GOCACHE"
    fi
    if ((${#FAILED[@]})); then
        log "FAILED: ${FAILED[*]} (the errors are in $STAMPS/<tool>.failed)"
        [[ ${TESTBIN_KEEP_GOING:-0} == 1 ]] || return 1
    fi
    echo "$BIN"
}

# Everything above only defines; bash has read the whole file before anything runs, so
# editing this script while it builds cannot derail the running copy.
main "$@"; exit $?
