# coredns-istio: `make image`, or
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t coredns-istio:TAG .
# A static binary on distroless, running as nonroot (65532). The in-cluster Corefile listens on
# 1053, so the container needs no capability at all (deploy/ drops ALL).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=${VERSION}" \
    -o /out/coredns-istio ./cmd/coredns-istio

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/coredns-istio /coredns-istio
COPY corefile/Corefile /etc/coredns/Corefile
USER 65532:65532
EXPOSE 1053/udp 1053/tcp 8080 8181 9153
ENTRYPOINT ["/coredns-istio"]
CMD ["-conf", "/etc/coredns/Corefile"]
