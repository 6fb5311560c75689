# vcfm controller image: a static (musl) binary on an empty base, run as a
# non-root user. The project's CI machines have no container runtime, so this
# file is not built there; it is kept deliberately plain.
#
#   docker build -t <registry>/vcfm:<tag> .
#   docker build --target must-gather -t <registry>/vcfm-must-gather:<tag> .
#   (then: cd deploy && kustomize edit set image vcfm=<registry>/vcfm:<tag>)

FROM docker.io/library/rust:1-alpine AS build
RUN apk add --no-cache musl-dev ca-certificates
WORKDIR /src
COPY . .
# Exactly the product: no simulator is linked in (crates/vcfm/tests/product_deps.rs
# resolves this very command with cargo tree and fails if one is).
RUN cargo build --release --locked -p vcfm --bin vcfm \
 && install -D -m 0755 target/release/vcfm /out/vcfm

# The must-gather image: `docker build --target must-gather -t <registry>/vcfm-must-gather:<tag> .`
# `oc adm must-gather` runs its /usr/bin/gather with /bin/bash and copies /must-gather out
# through a second container of the same image (oc rsync), so it needs the shell and
# tools of OpenShift's must-gather base; the controller image below has neither.
FROM quay.io/openshift/origin-must-gather:4.18 AS must-gather
COPY --from=build /out/vcfm /usr/bin/vcfm
COPY tools/must-gather/gather /usr/bin/gather
RUN chmod 0755 /usr/bin/gather

# The controller image (the default target: keep it last).
FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/vcfm /vcfm
# Numeric, so that runAsNonRoot can verify it; OpenShift's restricted SCC
# replaces it with a UID of the namespace's range, which works as well.
USER 65532:65532
# Probes (plain HTTP) and /metrics (TLS).
EXPOSE 8080 8443
ENTRYPOINT ["/vcfm"]
CMD ["controller"]
