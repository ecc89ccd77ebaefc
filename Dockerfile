# syntax=docker/dockerfile:1
# gamerelay container image: one static binary, every role a subcommand
# (gateway, sequencer, archiver, ...). Build with `make image`.
#
# Stage 1 compiles with the Go toolchain the module asks for (go.mod); it
# runs on the build machine's platform and cross-compiles for the target
# (docker buildx build --platform linux/amd64,linux/arm64 .).
ARG GO_VERSION=1.26
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, so source edits do not re-download them.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH=amd64
# CGO off: a static binary that needs no libc (the dev-only embedded stores
# are pure Go too).
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false -ldflags='-s -w' -o /out/gamerelay ./cmd/gamerelay

# Stage 2: distroless "static" has CA certificates, tzdata and /etc/passwd
# with the nonroot user (UID/GID 65532), and no shell or package manager.
# Pin it by digest in your pipeline (gcr.io/distroless/static-debian12:nonroot@sha256:...).
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="gamerelay" \
      org.opencontainers.image.description="Message gateway for multiplayer browser games (gateway, sequencer, archiver)" \
      org.opencontainers.image.source="https://github.com/gamerelay/gamerelay" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/gamerelay /usr/local/bin/gamerelay
# Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
# gateway :8080 (WebSocket /ws, demo /, HTTP API /v1) and admin ports
# :9090 gateway, :9091 sequencer, :9092 archiver (/metrics, /healthz, /readyz).
EXPOSE 8080 9090 9091 9092
ENTRYPOINT ["/usr/local/bin/gamerelay"]
CMD ["--help"]
