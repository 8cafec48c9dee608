#!/usr/bin/env bash
# Builds the `FROM scratch` image: static binaries on the host, then a build
# context holding only them and the Dockerfile (no registry is needed).
#   scripts/docker-build.sh [IMAGE]      (default trireme:latest)
# The static build's artifacts are in target/x86_64-unknown-linux-gnu/, apart
# from the usual target/release/.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-trireme:latest}
triple=x86_64-unknown-linux-gnu

# No debug info: the image gets stripped binaries anyway, and this second
# release build then has less to generate and link.
RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_DEBUG=0 \
  cargo build --release --locked --target "$triple" \
  -p trireme-server -p trireme-client --bins

bin="${CARGO_TARGET_DIR:-target}/$triple/release"
for b in trireme-server trireme; do
  # A dynamic binary would fail in the empty image with a confusing "no such file".
  if file "$bin/$b" 2>/dev/null | grep -q 'dynamically linked'; then
    echo "error: $bin/$b is dynamically linked" >&2
    exit 1
  fi
done

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$bin/trireme-server" "$bin/trireme" "$context/"
# Debug info stays on the host; the image gets stripped copies.
strip "$context/trireme-server" "$context/trireme" 2>/dev/null || true
docker build -q -f Dockerfile -t "$image" "$context" >/dev/null
echo "built $image"
