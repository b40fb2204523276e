# The cinnabar image: one binary for the operator (`cinnabar operator`) and the proxy pods it
# runs (`cinnabar proxy`). Untested here (no container engine on the build machine); the build
# is deploy/pgo/build.sh, the one the proxy benchmarks measure: the `dist` profile (whole-program
# optimization, see Cargo.toml), trained and rebuilt with profile-guided optimization of the
# proxy's data path. The training starts a local cluster, so the build stage needs Redis.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server redis-tools python3 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN rustup component add llvm-tools && bash deploy/pgo/build.sh

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin cinnabar
COPY --from=build /src/target/pgo/dist/cinnabar /usr/local/bin/cinnabar
USER 10001
ENTRYPOINT ["cinnabar"]
