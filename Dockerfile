# The cinnabar image: one binary for the operator (`cinnabar operator`) and the proxy pods it
# runs (`cinnabar proxy`). Untested here (no container engine on the build machine); the build
# steps are the README's, with the `dist` profile (whole-program optimization, see Cargo.toml).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --profile dist --locked --bin cinnabar

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin cinnabar
COPY --from=build /src/target/dist/cinnabar /usr/local/bin/cinnabar
USER 10001
ENTRYPOINT ["cinnabar"]
