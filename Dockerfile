# Trireme in an empty image: two statically linked binaries and nothing else
# (no shell, no libc, no base image to pull). Build it with
# scripts/docker-build.sh, which compiles the binaries on the host and uses
# a context holding only them:
#   RUSTFLAGS='-C target-feature=+crt-static' \
#     cargo build --release --target x86_64-unknown-linux-gnu ...
FROM scratch
COPY trireme-server trireme /usr/local/bin/
# Listen on every interface of the container (clients on 7420, peers on
# 7421); data on a volume. Set TRIREME_NODE_ID (or --node-id-from-hostname),
# TRIREME_ADVERTISE, TRIREME_PEER_ADVERTISE and TRIREME_INITIAL_CLUSTER (peer
# addresses; or TRIREME_JOIN) per node.
ENV TRIREME_LISTEN=0.0.0.0:7420 \
    TRIREME_PEER_LISTEN=0.0.0.0:7421 \
    TRIREME_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 7420 7421 9420
ENTRYPOINT ["/usr/local/bin/trireme-server"]
