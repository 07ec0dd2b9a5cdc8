# syntax=docker/dockerfile:1
# Multi-stage build: a static binary in a distroless, non-root image.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/sagaz ./cmd/consumer \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sagaz /usr/local/bin/sagaz
# The saga store lives here; mount a volume per replica.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV SAGAZ_DATA_DIR=/data \
    SAGAZ_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
VOLUME ["/data"]
ENTRYPOINT ["/usr/local/bin/sagaz"]
CMD ["run"]
