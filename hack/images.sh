#!/usr/bin/env bash
# Build the two container images offline (no registry, no Docker Hub): a base image made from
# Debian packages, then Dockerfile.runner (heavy: OpenCV + face model) and Dockerfile.operator
# (light: operator + API, no OpenCV) FROM it, with a dockerd of our own that runs only while
# something must be built or exported. Everything lives in a cache outside the repository:
#
#   ${SMARTTHUMB_IMAGES:-$HOME/.cache/smartthumb/images}/
#     docker/                  dockerd's data root (images, build cache, the pip cache mount)
#     <name>-<hash12>.tar      `docker save` of smartthumb-<name>:<hash12> and :<version>, for
#                              `ctr -n k8s.io images import FILE` without dockerd
#     <name>-<hash12>.info     size and build time (printed by later runs without dockerd)
#     logs/<name>.log          the last build's output
#
# Tags: smartthumb-base:<hash12>, smartthumb-runner:<hash12> + smartthumb-runner:<version>
# (the operator's default runner image), smartthumb-operator:<hash12> + :<version>.
# <hash12> is a hash of each image's inputs: its Dockerfile, .dockerignore, the folders it
# COPYs (runner/, operator/, api/: the files the build context sends) and the base image's
# recipe (the make_base function below, the suite and the package list).
#
# Idempotent: when every image's tag is in the data root and its tar file exists, the script
# exits at once without starting dockerd. Otherwise it starts dockerd (own socket, exec root
# and pid file under /tmp, no bridge, no iptables), builds or exports what is missing, smoke-
# tests new images (read-only root, uid 65532, no network), and always stops dockerd again
# (trap): no process, mount or network device is left behind. Older <hash12> tags and tar
# files of the same image are removed. Prints the tar files, one a line, on stdout (last).
#
# Needs root (debootstrap, dockerd) and python3; installs Debian's docker.io and debootstrap
# when missing (without letting the package start a system-wide dockerd). ~3 min cold on 2 cores.
# The build uses BuildKit through the docker.io package's own client (/usr/bin/docker).
#
# Usage: hack/images.sh [--print-tars]
# Env: SMARTTHUMB_IMAGES  cache root (default ~/.cache/smartthumb/images)
#      IMAGES_FORCE=1     rebuild (base included) even if the tags are present
#      IMAGES_ONLY="a b"  build only these images (runner operator)
#      IMAGES_BASE=IMAGE  build FROM this image instead of the Debian base (e.g. python:3.11-slim
#                         where a registry is reachable; the Dockerfiles' own default)
#      IMAGES_SUITE       Debian suite of the base (default bookworm: python3 is 3.11)
#      IMAGES_MIRROR      Debian mirror for debootstrap (default: the first one apt is set up with)
#      IMAGES_PIP_CERT    CA bundle that pip in the build trusts, handed in as the build secret
#                         pip_cert, never stored in a layer (default $PIP_CERT, else the host's
#                         /etc/ssl/certs/ca-certificates.crt)
#      PIP_INDEX_URL      passed to the build when set; HTTP(S)_PROXY/NO_PROXY too
#      IMAGES_SMOKE=0     skip the smoke test of freshly built images
#      IMAGES_BUILD_CACHE bound of dockerd's build cache after a build (default 4GB)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${SMARTTHUMB_IMAGES:-$HOME/.cache/smartthumb/images}
DATA=$CACHE/docker
LOGS=$CACHE/logs
SUITE=${IMAGES_SUITE:-bookworm}
BASE_PACKAGES=(python3 python3-venv python-is-python3 ca-certificates)
ALL_IMAGES=(runner operator)
DOCKER=/usr/bin/docker      # the client of Debian's docker.io: BuildKit without a buildx plugin
DOCKERD=/usr/sbin/dockerd
UID_NONROOT=65532

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }

wanted() { [[ -z ${IMAGES_ONLY:-} ]] || [[ " $IMAGES_ONLY " == *" $1 "* ]]; }

# --- what each image is made of ---------------------------------------------------------------
sha() { sha256sum | cut -c1-64; }

version_of() {  # version_of NAME [DIR] -> the version in NAME/pyproject.toml (the image's own)
    sed -n 's/^version = "\(.*\)"$/\1/p' "${2:-$ROOT}/$1/pyproject.toml" | head -n1
}

copied_dirs() {  # copied_dirs NAME [DIR] -> the folders Dockerfile.NAME copies from the context
    sed -n 's|^COPY \([A-Za-z0-9_.-]*\)/ .*|\1|p' "${2:-$ROOT}/Dockerfile.$1"
}

context_files() {  # context_files DIR FOLDER...: the files the build context sends (.dockerignore)
    local dir=$1
    shift
    (cd "$dir" && find "$@" -type f \
        ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' \
        ! -path '*/build/*' ! -path '*/dist/*' -print0 | LC_ALL=C sort -z)
}

stage_context() {  # stage_context NAME DIR: a snapshot of exactly what image_hash hashes
    local name=$1 dir=$2 dirs
    mapfile -t dirs < <(copied_dirs "$name")
    (cd "$ROOT" && cp "Dockerfile.$name" .dockerignore "$dir/")
    context_files "$ROOT" "${dirs[@]}" | (cd "$ROOT" && tar --null -T - -cf -) | tar -xf - -C "$dir"
}

base_hash() {
    if [[ -n ${IMAGES_BASE:-} ]]; then
        printf 'image %s\n' "$IMAGES_BASE" | sha
    else
        { declare -f make_base; echo "$SUITE ${BASE_PACKAGES[*]}"; } | sha
    fi
}

image_hash() {  # image_hash NAME BASE_HASH [DIR]: DIR (default the repository) holds the inputs
    local name=$1 dir=${3:-$ROOT} dirs
    mapfile -t dirs < <(copied_dirs "$name" "$dir")
    ((${#dirs[@]})) || die "Dockerfile.$name copies no folder: cannot hash its inputs"
    {
        echo "base $2"
        echo "version $(version_of "$name" "$dir")"
        (cd "$dir" && sha256sum "Dockerfile.$name" .dockerignore)
        context_files "$dir" "${dirs[@]}" | (cd "$dir" && xargs -0 -r sha256sum)
    } | sha
}

# --- the docker data root, read without dockerd ------------------------------------------------
tagged() {  # tagged REF [SAME_AS_REF] -> 0 when REF is in the data root (and names SAME_AS_REF's image)
    local repos=$DATA/image/overlay2/repositories.json
    [[ -f $repos ]] || return 1
    python3 - "$repos" "$@" <<'PY'
import json, sys
repos = json.load(open(sys.argv[1])).get("Repositories", {})
ids = {tag: image for tags in repos.values() for tag, image in tags.items()}
found = [ids.get(ref) or ids.get("docker.io/library/" + ref) for ref in sys.argv[2:]]
sys.exit(0 if found[0] and all(f == found[0] for f in found) else 1)
PY
}

# --- dockerd, only while needed ------------------------------------------------------------------
RUNDIR=""
DOCKERD_PID=""
RUN_DOCKER_EXISTED=1

ensure_tools() {
    local missing=()
    [[ -x $DOCKERD && -x $DOCKER ]] || missing+=(docker.io)
    [[ -n ${IMAGES_BASE:-} ]] || command -v debootstrap >/dev/null || missing+=(debootstrap)
    ((${#missing[@]})) || return 0
    [[ $(id -u) == 0 ]] || die "not root and missing ${missing[*]}: cannot build the images"
    log "installing ${missing[*]} (Debian packages)"
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [[ ! -e $policy ]]; then  # the package must not start a system-wide dockerd
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    local rc=0
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
    ((own_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install ${missing[*]} failed"
}

docker() { DOCKER_HOST="unix://$RUNDIR/docker.sock" DOCKER_BUILDKIT=1 "$DOCKER" "$@"; }

start_dockerd() {
    [[ -n $DOCKERD_PID ]] && return 0
    [[ $(id -u) == 0 ]] || die "dockerd needs root"
    mkdir -p "$DATA" "$LOGS"
    [[ -d /run/docker ]] || RUN_DOCKER_EXISTED=0
    RUNDIR=$(mktemp -d /tmp/smartthumb-dockerd.XXXXXX)   # short: socket paths have a limit
    # A config of our own (not /etc/docker/daemon.json); its key file stays out of /etc/docker.
    printf '{"deprecated-key-path": "%s", "features": {"buildkit": true}}\n' \
        "$CACHE/dockerd-key.json" >"$RUNDIR/daemon.json"
    log "starting dockerd (data root $DATA, socket $RUNDIR/docker.sock)"
    setsid "$DOCKERD" --config-file "$RUNDIR/daemon.json" \
        --data-root "$DATA" --exec-root "$RUNDIR/exec" --pidfile "$RUNDIR/dockerd.pid" \
        --host "unix://$RUNDIR/docker.sock" --bridge=none --iptables=false --ip6tables=false \
        --ip-forward=false --ip-masq=false --userland-proxy=false \
        </dev/null >"$LOGS/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    local i
    for ((i = 0; i < 60; i++)); do
        if docker version >/dev/null 2>&1; then
            DOCKERD_PID=$(cat "$RUNDIR/dockerd.pid")
            return 0
        fi
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 0.5
    done
    tail -n 20 "$LOGS/dockerd.log" >&2
    die "dockerd did not come up (log: $LOGS/dockerd.log)"
}

stop_dockerd() {
    [[ -n $DOCKERD_PID ]] || return 0
    log "stopping dockerd"
    # Containers of a build or a smoke test that an interrupt left behind go first.
    local ids
    mapfile -t ids < <(docker ps -aq 2>/dev/null || true)
    ((${#ids[@]} == 0)) || docker rm -f "${ids[@]}" >/dev/null 2>&1 || true
    kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 60; i++)); do
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
        log "dockerd did not stop in 30 s: killing it"
        kill -KILL -- "-$DOCKERD_PID" 2>/dev/null || true
    fi
    wait "$DOCKERD_PID" 2>/dev/null || true
    # Its containerd and shims share its process group (setsid): end whatever is left of it.
    kill -KILL -- "-$DOCKERD_PID" 2>/dev/null || true
    local mnt
    while read -r mnt; do
        [[ -n $mnt ]] && umount -l "$mnt" 2>/dev/null || true
    done < <(findmnt -rn -o TARGET | grep -F -e "$DATA" -e "$RUNDIR" | sort -r)
    rm -rf "$RUNDIR"
    ((RUN_DOCKER_EXISTED)) || rmdir /run/docker/plugins /run/docker 2>/dev/null || true
    DOCKERD_PID=""
}

# Long steps run in the background and are waited for, so that a TERM or INT runs the trap at
# once (bash defers traps until a foreground command returns); the trap ends their processes.
CHILD=""
waited() {  # waited LOG CMD...: run CMD in the background, output to LOG, and wait for it
    local rc=0 log=$1
    shift
    "$@" >"$log" 2>&1 &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}

# shellcheck disable=SC2329  # the EXIT trap's
kill_tree() {  # kill_tree PID: the process and its descendants, by process id
    local child
    for child in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$child"; done
    kill -TERM "$1" 2>/dev/null || true
}

ROOTFS=""
STAGE=""
# shellcheck disable=SC2329  # the EXIT trap's
cleanup() {
    local rc=$?
    [[ -z $CHILD ]] || { kill_tree "$CHILD"; wait "$CHILD" 2>/dev/null || true; }
    stop_dockerd
    [[ -z $ROOTFS ]] || remove_rootfs "$ROOTFS"
    rm -f "$CACHE"/*.tar.part
    [[ -z $STAGE ]] || rm -rf "$STAGE"
    exit "$rc"
}

# --- the base image: Debian packages, no registry -------------------------------------------------
mirror() {
    if [[ -n ${IMAGES_MIRROR:-} ]]; then echo "$IMAGES_MIRROR"; return; fi
    local url
    url=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '$1 == "URIs:" && $2 ~ /\/debian\/?$/ {print $2; exit}')
    [[ -n $url ]] || url=$(cat /etc/apt/sources.list 2>/dev/null | awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}')
    echo "${url:-http://deb.debian.org/debian}"
}

remove_rootfs() {  # unmount whatever debootstrap left mounted inside, then delete
    local dir=$1 mnt
    while read -r mnt; do
        [[ -n $mnt ]] && umount -l "$mnt" 2>/dev/null || true
    done < <(findmnt -rn -o TARGET | grep -F "$dir/" | sort -r)
    rm -rf --one-file-system "$dir"
}

# What python:3.11-slim gives the Dockerfiles: python3 (3.11 in bookworm) with venv and pip,
# `python`, CA certificates, useradd; no compiler. Docs, man pages, locales and apt's lists go.
make_base() {  # make_base TAG
    local tag=$1 url
    url=$(mirror)
    ROOTFS=$CACHE/rootfs
    remove_rootfs "$ROOTFS"
    log "base: debootstrap --variant=minbase $SUITE from $url (${BASE_PACKAGES[*]})"
    local packages
    packages=$(IFS=,; echo "${BASE_PACKAGES[*]}")
    waited "$LOGS/debootstrap.log" \
        debootstrap --variant=minbase --include="$packages" "$SUITE" "$ROOTFS" "$url" || { tail -n 30 "$LOGS/debootstrap.log" >&2; return 1; }
    (
        cd "$ROOTFS"
        rm -rf var/lib/apt/lists/* var/cache/apt/* var/cache/debconf/*-old var/log/* \
            usr/share/man/* usr/share/info/* usr/share/locale/* usr/share/lintian usr/share/linda
        find usr/share/doc -type f ! -name copyright -delete
        find usr/share/doc -type l -delete
        find usr/share/doc -mindepth 1 -type d -empty -delete
        : >etc/machine-id
    )
    log "base: docker import as $tag"
    tar --numeric-owner --xattrs -C "$ROOTFS" \
        --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' \
        --exclude='./tmp/*' -c . |
        docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'CMD ["python3"]' \
            --change "LABEL org.opencontainers.image.title=smartthumb-base org.opencontainers.image.description=\"Debian $SUITE minbase with ${BASE_PACKAGES[*]}\"" \
            - "$tag" >/dev/null
    remove_rootfs "$ROOTFS"
    ROOTFS=""
    local ref
    while read -r ref; do  # older bases: only their tags go (images built on them keep theirs)
        [[ -z $ref || $ref == "$tag" ]] || docker rmi "$ref" >/dev/null 2>&1 || true
    done < <(docker images --format '{{.Repository}}:{{.Tag}}' smartthumb-base)
}

# --- building, exporting, smoke-testing ---------------------------------------------------------
build_image() {  # build_image NAME HASH BASE_TAG VERSION CONTEXT
    local name=$1 hash=$2 base=$3 version=$4 context=$5 t=$SECONDS
    local args=(--network host --progress plain -f "$context/Dockerfile.$name"
        --build-arg "BASE_IMAGE=$base" --build-arg "VERSION=$version"
        -t "smartthumb-$name:$hash" -t "smartthumb-$name:$version")
    local cert=${IMAGES_PIP_CERT:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}
    [[ -s $cert ]] && args+=(--secret "id=pip_cert,src=$cert")
    [[ -n ${PIP_INDEX_URL:-} ]] && args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
    local v
    for v in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
        [[ -n ${!v:-} ]] && args+=(--build-arg "$v=${!v}")
    done
    [[ ${IMAGES_FORCE:-0} == 1 ]] && args+=(--no-cache)
    log "$name: docker build -f Dockerfile.$name (FROM $base) -> smartthumb-$name:$hash, :$version"
    if ! waited "$LOGS/$name.log" docker build "${args[@]}" "$context"; then
        tail -n 40 "$LOGS/$name.log" >&2
        die "$name: build failed (log: $LOGS/$name.log)"
    fi
    BUILT_IN[$name]=$((SECONDS - t))
    log "$name: built in ${BUILT_IN[$name]}s"
}

smoke() {  # smoke NAME TAG: run the image as the operator runs it (read-only, uid 65532, no net)
    local name=$1 tag=$2 dir
    dir=$(mktemp -d /tmp/smartthumb-smoke.XXXXXX)
    chmod 0777 "$dir"
    local run=(docker run --rm --read-only --tmpfs /tmp --user "$UID_NONROOT:$UID_NONROOT"
        --network none --cap-drop ALL --security-opt no-new-privileges -v "$dir:/work")
    # A picture with a subject off-centre, drawn by the image's own Pillow.
    "${run[@]}" --entrypoint python3 "$tag" -c '
from PIL import Image, ImageDraw
im = Image.new("RGB", (900, 600), (40, 90, 160))
d = ImageDraw.Draw(im)
d.ellipse((560, 180, 800, 420), fill=(240, 200, 40), outline=(0, 0, 0), width=8)
im.save("/work/in.jpg", quality=90)' || { rm -rf "$dir"; die "$name: smoke test: python3 failed"; }
    local out
    if [[ $name == runner ]]; then
        out=$("${run[@]}" "$tag" crop /work/in.jpg -o /work/out.jpg --mode crop --width 300 --height 300) &&
            [[ $out == *'"width":300'* && $out == *'"method":"crop:'*saliency* ]] || { rm -rf "$dir"; die "$name: smoke test: crop failed: $out"; }
        "${run[@]}" --entrypoint python3 "$tag" -c 'import cv2; from smartthumb.runner.models import face_model_path as f; assert f(), "no face model"' ||
            { rm -rf "$dir"; die "$name: smoke test: OpenCV or the face model is missing"; }
    else
        "${run[@]}" -e SMARTTHUMB_VOLUME_HOST_PATH=/srv/smartthumb "$tag" smartthumb-operator --help >/dev/null ||
            { rm -rf "$dir"; die "$name: smoke test: smartthumb-operator --help failed"; }
        "${run[@]}" --entrypoint python3 "$tag" -c 'import importlib.util as u, smartthumb.operator.kube.main, smartthumb.api.main
assert u.find_spec("kubernetes.aio") is None, "kubernetes.aio is in the image"' ||
            { rm -rf "$dir"; die "$name: smoke test: the operator or the API does not import, or kubernetes.aio is there"; }
        if "${run[@]}" --entrypoint python3 "$tag" -c 'import cv2' 2>/dev/null; then
            rm -rf "$dir"; die "$name: smoke test: OpenCV is in the light image"
        fi
    fi
    out=$("${run[@]}" --entrypoint smartthumb "$tag" crop /work/in.jpg -o /work/fb.jpg --mode crop \
        --width 200 --height 200 --fallback) && [[ $out == *'"width":200'* ]] ||
        { rm -rf "$dir"; die "$name: smoke test: crop --fallback failed: $out"; }
    rm -rf "$dir"
    log "$name: smoke test passed (read-only root, uid $UID_NONROOT, no network)"
}

export_image() {  # export_image NAME HASH VERSION
    local name=$1 hash=$2 version=$3 tar=$CACHE/$1-$2.tar size
    log "$name: docker save -> $tar"
    waited "$LOGS/$name.save.log" docker save -o "$tar.part" "smartthumb-$name:$hash" "smartthumb-$name:$version" ||
        { rm -f "$tar.part"; die "$name: docker save failed"; }
    chmod 0644 "$tar.part"
    mv "$tar.part" "$tar"
    size=$(docker image inspect -f '{{.Size}}' "smartthumb-$name:$hash")
    printf 'size=%s\nbuilt_seconds=%s\ntar_bytes=%s\n' "$size" "${BUILT_IN[$name]:-}" \
        "$(stat -c %s "$tar")" >"$CACHE/$name-$hash.info"
}

prune_old() {  # prune_old NAME HASH VERSION: older hash tags and their tar files
    local name=$1 hash=$2 version=$3 ref
    while read -r ref; do
        [[ -z $ref || $ref == "smartthumb-$name:$hash" || $ref == "smartthumb-$name:$version" ]] ||
            docker rmi "$ref" >/dev/null 2>&1 || true
    done < <(docker images --format '{{.Repository}}:{{.Tag}}' "smartthumb-$name")
    local f
    for f in "$CACHE/$name"-*.tar "$CACHE/$name"-*.info; do
        [[ -e $f && $f != "$CACHE/$name-$hash".* ]] && rm -f "$f"
    done
    return 0
}

human() { awk -v b="$1" 'BEGIN { printf "%.0f MB", b / 1e6 }'; }

declare -A BUILT_IN=()

main() {
    local base_tag bh name hash version
    bh=$(base_hash)
    base_tag=${IMAGES_BASE:-smartthumb-base:${bh:0:12}}
    local -A HASH=() VERSION=()
    for name in "${ALL_IMAGES[@]}"; do
        wanted "$name" || continue
        hash=$(image_hash "$name" "$bh"); HASH[$name]=${hash:0:12}
        VERSION[$name]=$(version_of "$name")
    done
    if [[ ${1:-} == --print-tars ]]; then  # where the tar files are (or will be); builds nothing
        for name in "${!HASH[@]}"; do echo "$CACHE/$name-${HASH[$name]}.tar"; done | sort
        return 0
    fi
    mkdir -p "$CACHE" "$LOGS"
    exec 9>"$CACHE/.lock"
    flock 9 || die "cannot lock $CACHE/.lock"

    local todo=() force=${IMAGES_FORCE:-0} base_done=0
    for name in "${!HASH[@]}"; do
        hash=${HASH[$name]}
        if [[ $force == 1 ]] || ! tagged "smartthumb-$name:$hash" "smartthumb-$name:${VERSION[$name]}" ||
            [[ ! -s $CACHE/$name-$hash.tar || ! -s $CACHE/$name-$hash.info ]]; then
            todo+=("$name")
        fi
    done
    local t0=$SECONDS
    if ((${#todo[@]})); then
        ensure_tools
        trap cleanup EXIT
        trap 'exit 130' INT TERM
        start_dockerd
        for name in $(printf '%s\n' "${todo[@]}" | sort -r); do  # runner (the long one) first
            hash=${HASH[$name]}
            if [[ $force != 1 ]] && tagged "smartthumb-$name:$hash"; then
                log "$name: smartthumb-$name:$hash is built; tagging and exporting it"
                docker tag "smartthumb-$name:$hash" "smartthumb-$name:${VERSION[$name]}"
            elif [[ $force != 1 && -s $CACHE/$name-$hash.tar ]]; then
                log "$name: loading $CACHE/$name-$hash.tar"
                docker load -q -i "$CACHE/$name-$hash.tar" >/dev/null
            else
                if [[ -z ${IMAGES_BASE:-} && $base_done == 0 ]] &&
                    { [[ $force == 1 ]] || ! tagged "$base_tag"; }; then
                    local tb=$SECONDS
                    make_base "$base_tag"
                    base_done=1
                    log "base: $base_tag made in $((SECONDS - tb))s"
                fi
                # Built from a snapshot, so that the tag names exactly what went in even while
                # someone edits the tree (the hash taken above may be a moment old).
                STAGE=$(mktemp -d /tmp/smartthumb-context.XXXXXX)
                stage_context "$name" "$STAGE"
                local staged
                staged=$(image_hash "$name" "$bh" "$STAGE"); staged=${staged:0:12}
                if [[ $staged != "$hash" ]]; then
                    log "$name: the inputs changed since the start: building smartthumb-$name:$staged"
                    hash=$staged; HASH[$name]=$staged
                fi
                build_image "$name" "$hash" "$base_tag" "${VERSION[$name]}" "$STAGE"
                rm -rf "$STAGE"; STAGE=""
                if [[ ${IMAGES_SMOKE:-1} != 0 ]] && ! (smoke "$name" "smartthumb-$name:$hash"); then
                    docker rmi "smartthumb-$name:$hash" "smartthumb-$name:${VERSION[$name]}" >/dev/null 2>&1 || true
                    die "$name: smoke test failed: the image is untagged (the next run builds it again)"
                fi
            fi
            export_image "$name" "$hash" "${VERSION[$name]}"
            prune_old "$name" "$hash" "${VERSION[$name]}"
        done
        # The build cache (old layers, the pip cache mount) is kept, up to a bound.
        docker builder prune -f --keep-storage "${IMAGES_BUILD_CACHE:-4GB}" >/dev/null 2>&1 || true
        stop_dockerd
        trap - EXIT INT TERM
        log "done in $((SECONDS - t0))s"
    fi

    local info size built
    for name in $(printf '%s\n' "${!HASH[@]}" | sort -r); do
        hash=${HASH[$name]}; info=$CACHE/$name-$hash.info
        size=$(sed -n 's/^size=//p' "$info"); built=$(sed -n 's/^built_seconds=//p' "$info")
        log "smartthumb-$name:$hash (:${VERSION[$name]}) $(human "$size") ($size bytes)${built:+, built in ${built}s}"
    done
    for name in $(printf '%s\n' "${!HASH[@]}" | sort -r); do echo "$CACHE/$name-${HASH[$name]}.tar"; done
}

# Everything above only defines; bash has read the whole file before anything runs, so
# editing this script while it builds cannot derail the running copy.
main "$@"; exit $?
