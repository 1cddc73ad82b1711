# Strata in a container: a static-ish release binary on a distroless base, as a non-root user.
#
#   docker build -t strata .
#   docker run --rm -p 8080:8080 strata demo --listen 0.0.0.0:8080
#   docker compose -f deploy/compose/docker-compose.yml up    (two PoPs, a shield, NATS x3)
#
# The build stage compiles with the lockfile; the image holds the binary and the CA
# certificates (for https origins and ACME) and nothing else: no shell, no package manager.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p strata \
    && strip target/release/strata \
    && mkdir -p /state

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/strata /usr/local/bin/strata
# Disk cache, ACME state: mount volumes here. Made owned by the nonroot user (65532), so
# a named volume mounted on it starts writable (WORKDIR alone may create it as root).
COPY --from=build --chown=65532:65532 /state /var/lib/strata
WORKDIR /var/lib/strata
USER nonroot:nonroot
EXPOSE 8080 8443/tcp 8443/udp 9901
ENTRYPOINT ["/usr/local/bin/strata"]
CMD ["demo"]
