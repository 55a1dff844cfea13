#!/usr/bin/env bash
# Builds stand-ins for the two official base images the project's Dockerfiles start FROM, for a
# machine whose Docker engine cannot reach Docker Hub (an air-gapped build host, or the
# project's own CI): both are bootstrapped from Debian's own packages with debootstrap.
#
#   deploy/standin/build.sh            # prints the two tags, builds what is missing
#
#   invasive-standin/debian:bookworm-slim   minbase Debian 12      (for debian:bookworm-slim)
#   invasive-standin/python:3.11-bookworm   + python3.11, venv, at /usr/local/bin/python
#                                           (for python:3.11.14-slim-bookworm)
#
# Then: docker build --build-arg PYTHON_IMAGE=invasive-standin/python:3.11-bookworm .
# The host's CA bundle is copied in, so that pip and apt inside builds trust whatever the host
# trusts (a TLS-inspecting proxy on the way to PyPI, for instance). Needs root and debootstrap.
set -euo pipefail

DEBIAN_TAG=${STANDIN_DEBIAN_TAG:-invasive-standin/debian:bookworm-slim}
PYTHON_TAG=${STANDIN_PYTHON_TAG:-invasive-standin/python:3.11-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")" && pwd)

have() { docker image inspect "$1" >/dev/null 2>&1; }

if ! have "$DEBIAN_TAG"; then
    command -v debootstrap >/dev/null || { echo "standin: debootstrap is missing (apt-get install -y debootstrap)" >&2; exit 1; }
    root=$(mktemp -d /tmp/standin-rootfs.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    start=$SECONDS
    debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$MIRROR" >"$root.log" 2>&1 \
        || { tail -20 "$root.log" >&2; exit 1; }
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    fi
    # What the official slim images also do: no apt caches, no docs.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* "$root"/usr/share/man/*
    tar -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["bash"]' - "$DEBIAN_TAG" >/dev/null
    rm -f "$root.log"
    echo "standin: built $DEBIAN_TAG in $((SECONDS - start)) s"
fi

if ! have "$PYTHON_TAG"; then
    start=$SECONDS
    docker build --quiet --build-arg "DEBIAN_IMAGE=$DEBIAN_TAG" -t "$PYTHON_TAG" \
        -f "$here/python.Dockerfile" "$here" >/dev/null
    echo "standin: built $PYTHON_TAG in $((SECONDS - start)) s"
fi
echo "$DEBIAN_TAG"
echo "$PYTHON_TAG"
