# Trireme in an empty image: two statically linked binaries and nothing else
# (no shell, no libc, no base image to pull). Build it with
# scripts/docker-build.sh, which compiles the binaries on the host and uses
# a context holding only them:
#   RUSTFLAGS='-C target-feature=+crt-static' \
#     cargo build --release --target x86_64-unknown-linux-gnu ...
FROM scratch
COPY trireme-server trireme /usr/local/bin/
# Listen on every interface of the container; data on a volume. Set
# TRIREME_NODE_ID (or --node-id-from-hostname), TRIREME_ADVERTISE and
# TRIREME_INITIAL_CLUSTER (or TRIREME_JOIN) per node.
ENV TRIREME_LISTEN=0.0.0.0:7420 \
    TRIREME_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 7420 9420
ENTRYPOINT ["/usr/local/bin/trireme-server"]
