# filad's image: static binaries on an empty base, run as a non-root user,
# the data in a volume, a health check that needs no shell.
#
#   docker build --build-arg VERSION=v0.2.0 -t filad .     (or buildah bud)
#   docker run -p 5555:5555 -v filad-data:/data \
#     -e FILA_AUTH__BOOTSTRAP_KEY=... filad
#
# It listens on 0.0.0.0, so API keys are on (auth mode auto): give it a
# bootstrap key, or mount a fila.toml at /etc/filad/fila.toml.
ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
ARG VERSION=""
ARG COMMIT=""
# The same static, stamped build as a release (scripts/release.sh).
RUN VERSION="${VERSION}" COMMIT="${COMMIT}" scripts/release.sh --host --out /out \
 && mv /out/filad-* /out/filad && mv /out/fila-* /out/fila \
 && mkdir -p /skel/data /skel/etc/filad

FROM scratch
COPY --from=build /out/filad /out/fila /usr/local/bin/
COPY --from=build --chown=65532:65532 /skel/data /data
COPY --from=build /skel/etc/filad /etc/filad
USER 65532:65532
WORKDIR /etc/filad
ENV FILA_SERVER__LISTEN_ADDR=0.0.0.0:5555 FILA_STORAGE__DATA_DIR=/data
VOLUME /data
EXPOSE 5555
HEALTHCHECK --interval=10s --timeout=6s --start-period=30s CMD ["/usr/local/bin/filad", "health"]
ENTRYPOINT ["/usr/local/bin/filad"]
