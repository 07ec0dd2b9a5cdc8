# syntax=docker/dockerfile:1
# Multi-stage build: a static binary in a distroless, non-root image (no
# shell: the health check is the binary's own `sagaz healthcheck`).
#
#   docker build --build-arg VERSION=$(git describe --tags --match 'v*' --always) --build-arg COMMIT=$(git rev-parse HEAD) -t sagaz .
FROM golang:1.26 AS build
ARG VERSION=devel
ARG COMMIT=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags="-s -w -X github.com/sagaz-go/sagaz/internal/buildinfo.version=${VERSION} -X github.com/sagaz-go/sagaz/internal/buildinfo.commit=${COMMIT}" \
      -o /out/sagaz ./cmd/consumer \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sagaz /usr/local/bin/sagaz
# The saga store lives here; mount a volume per replica.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV SAGAZ_DATA_DIR=/data \
    GOMEMLIMIT=400MiB \
    SAGAZ_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
VOLUME ["/data"]
# Ready = recovery done, group joined, assigned partitions restored.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["/usr/local/bin/sagaz", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/sagaz"]
CMD ["run"]
