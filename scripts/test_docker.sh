#!/usr/bin/env bash
# Build the image (and its EXTRAS=1 variant) and try it as a user would (docker/test_image.py):
# health and HEALTHCHECK, every page in Chromium, a mounted models folder (a 0600 model refused with
# the fix, then explained), a mounted slides folder, batch into a host folder, the optional model
# kinds refused with the fix by the image and loaded by its variant. Docker when an engine answers; else podman
# (installed when missing), with the recipe these machines need: runc (crun fails on hybrid
# cgroups), capped ulimits, the machine's CA file for pip behind its proxy, and a stand-in for
# python:3.11-slim-bookworm built from Debian packages when no registry can be reached.
# Extra arguments go to pytest. SEGCAM_DOCKER=skip skips it (a machine without either engine).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SEGCAM_DOCKER:-}" = skip ]; then echo "test_docker: skipped (SEGCAM_DOCKER=skip)"; exit 0; fi
IMAGE=segcam:test
BASE=docker.io/library/python:3.11-slim-bookworm
CA=/etc/ssl/certs/ca-certificates.crt
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
t0=$(date +%s)

if docker info >/dev/null 2>&1; then
  engine=docker
  run_args=""
  build=(docker build)
else
  if ! command -v podman >/dev/null || ! command -v mmdebstrap >/dev/null || [ ! -x /usr/sbin/runc ]; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq podman runc mmdebstrap >/dev/null
  fi
  engine=podman
  limits="--ulimit nofile=1024:4096 --ulimit nproc=4096:4096"
  run_args="--runtime /usr/sbin/runc $limits"
  if ! podman image exists "$BASE" && ! timeout 60 podman pull -q "$BASE" >/dev/null 2>&1; then
    echo "test_docker: no registry; building $BASE from Debian packages (mmdebstrap)" >&2
    work=$(mktemp -d)
    mmdebstrap --quiet --variant=minbase \
      --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates bookworm "$work/rootfs.tar"
    podman import -q "$work/rootfs.tar" segcam-debian-base >/dev/null
    printf '%s\n' 'FROM localhost/segcam-debian-base' \
      'RUN rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED && ln -sf /usr/bin/python3 /usr/local/bin/python' \
      >"$work/Containerfile"
    podman build -q --runtime /usr/sbin/runc $limits --pull=never -t "$BASE" -f "$work/Containerfile" "$work" >/dev/null
    rm -rf "$work"
  fi
  build=(podman build --runtime /usr/sbin/runc $limits --pull=never --format docker)
  [ -f "$CA" ] && build+=(--network host -v "$CA:$CA:ro")
fi
# PyTorch's CPU index when it answers (the smaller image); else PyPI's CUDA build.
index=https://download.pytorch.org/whl/cpu
if ! curl -sf --max-time 10 -o /dev/null "$index/torch/"; then
  echo "test_docker: $index unreachable; building with PyPI's torch (the CUDA build)" >&2
  index=https://pypi.org/simple
fi
"${build[@]}" -q --build-arg TORCH_INDEX_URL="$index" -t "$IMAGE" . >/dev/null
t1=$(date +%s)
size=$($engine image inspect "$IMAGE" --format '{{.Size}}')
echo "test_docker: $engine built $IMAGE in $((t1 - t0)) s ($((size / 1000000)) MB, torch from $index)" >&2
# The same image with the optional model kinds (--build-arg EXTRAS=1): its layers up to them are shared.
"${build[@]}" -q --build-arg TORCH_INDEX_URL="$index" --build-arg EXTRAS=1 -t "$IMAGE-extras" . >/dev/null
t2=$(date +%s)
size=$($engine image inspect "$IMAGE-extras" --format '{{.Size}}')
echo "test_docker: $engine built $IMAGE-extras in $((t2 - t1)) s more ($((size / 1000000)) MB)" >&2
SEGCAM_ENGINE=$engine SEGCAM_ENGINE_ARGS="$run_args" SEGCAM_IMAGE=$IMAGE SEGCAM_IMAGE_EXTRAS=$IMAGE-extras \
  .venv/bin/python -m pytest -s -p no:cacheprovider docker/test_image.py "$@"
echo "test_docker: done in $(($(date +%s) - t0)) s" >&2
