#!/usr/bin/env bash
# Build the Apptainer/Singularity image of this repository's environment from 00_containers/lsd_nm.def.
#
# Run: 00_containers/build.sh [OUT.sif]          (or: make container [SINGULARITY=apptainer])
#   OUT.sif                 the image to write (default: lsd_nm.sif at the repository's root); replaced only once
#                           the new image is complete
#   SINGULARITY=apptainer   the command that builds (default: singularity)
#   BUILD_FLAGS=...         flags for `build` (default: --fakeroot, unless run as root)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(realpath -m "${1:-$root/lsd_nm.sif}")"
runtime="${SINGULARITY:-singularity}"
if ! command -v "$runtime" >/dev/null 2>&1; then
    echo "error: '$runtime' not found (install Apptainer or Singularity, or pass SINGULARITY=apptainer)" >&2
    exit 2
fi
if [ -z "${BUILD_FLAGS+set}" ]; then
    if [ "$(id -u)" -eq 0 ]; then BUILD_FLAGS=""; else BUILD_FLAGS="--fakeroot"; fi
fi
partial="$out.partial"
rm -f "$partial"
trap 'rm -f "$partial"' EXIT
cd "$root"  # the definition's %files paths are relative to the repository's root
# shellcheck disable=SC2086  # BUILD_FLAGS is a list of flags
"$runtime" build $BUILD_FLAGS "$partial" 00_containers/lsd_nm.def
mv -f "$partial" "$out"
trap - EXIT
echo "$out"
