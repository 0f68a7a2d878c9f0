#!/bin/bash
# Build the Debian 12 base image the compose rig runs on, from Debian's own packages
# (no image registry needed): debootstrap into a folder, then docker import.
# Everything the containers need is installed here, since a container may not reach a mirror.
set -euo pipefail
tag=${1:-mailseal-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$(mktemp -d /var/tmp/mailseal-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase \
    --include=postfix,knot,python3,ca-certificates,netbase,procps \
    bookworm "$root" "$mirror"
# No services start at install time inside the image; no mail config questions.
rm -f "$root"/var/cache/apt/archives/*.deb
tar -C "$root" -c . | docker import - "$tag"
echo "imported $tag"
