#!/bin/sh
# The two images docker-compose.yml needs from outside this project, built from Debian's own
# packages with no image registry (run as root; needs debootstrap and a Debian mirror):
#
#   cddf-base:bookworm         Debian 12 with python3 (debootstrap), the PYTHON_IMAGE the
#                              Dockerfile builds on; this machine's extra CA certificates
#                              (/usr/local/share/ca-certificates/*.crt) are trusted in it
#   cddf-postgres:15-bookworm  Debian's postgresql-15 on that base (deploy/images/postgres/),
#                              the POSTGRES_IMAGE for the postgres service
#
# Then name them in .env (docs/deploy.md, "Without a registry"):
#   PYTHON_IMAGE=cddf-base:bookworm
#   POSTGRES_IMAGE=cddf-postgres:15-bookworm
#
# The base is rebuilt only when what it is built from (the packages, the CA certificates)
# changed, or with --rebuild; the PostgreSQL image's layers are cached by Docker.
# DEBIAN_MIRROR (default http://deb.debian.org/debian) names another Debian mirror.
set -eu
BASE_IMAGE=cddf-base:bookworm
POSTGRES_IMAGE=cddf-postgres:15-bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
INCLUDE=python3,python3-venv,ca-certificates
LOCAL_CAS=/usr/local/share/ca-certificates
here=$(cd "$(dirname "$0")" && pwd)

key=$( (echo "$INCLUDE"; cat "$LOCAL_CAS"/*.crt 2>/dev/null || true) | sha256sum | cut -c1-16)
built=$(docker image inspect -f '{{ index .Config.Labels "cddf.base-key" }}' "$BASE_IMAGE" \
    2>/dev/null || true)
if [ "${1:-}" = --rebuild ] || [ "$built" != "$key" ]; then
    command -v debootstrap >/dev/null || PATH=$PATH:/usr/sbin
    rootfs=$(mktemp -d /var/tmp/cddf-rootfs-XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include="$INCLUDE" bookworm "$rootfs" "$DEBIAN_MIRROR"
    if ls "$LOCAL_CAS"/*.crt >/dev/null 2>&1; then
        cp "$LOCAL_CAS"/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates
    fi
    # pip's own CA list (certifi) knows no local CA: point it at the system bundle
    tar -C "$rootfs" -c . | docker import \
        --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt" \
        --change "LABEL cddf.base-key=$key" - "$BASE_IMAGE"
    echo "built $BASE_IMAGE"
else
    echo "$BASE_IMAGE is up to date"
fi
docker build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$POSTGRES_IMAGE" \
    "$here/postgres"
echo "built $POSTGRES_IMAGE"
