# gim-logic container image (it also holds gim-gateway).
#
#   docker build -t gim-logic .
#   docker run -e GIM_TOKEN_SECRET=... -p 127.0.0.1:7400:7400 -v gim-data:/var/lib/gim gim-logic
#   docker run --entrypoint gim-gateway -p 8080:8080 -p 8081:8081 gim-logic \
#       --config /etc/gim-logic/gim-gateway.yaml     (docker-compose.yml runs both)
#
# The image ships config/docker.yaml as /etc/gim-logic/gim-logic.yaml; mount
# your own file there to change it (docker-compose.yml does).

# ---- build stage --------------------------------------------------------------
FROM debian:bookworm AS build

WORKDIR /src
# Only what the build needs, so unrelated changes keep the layer cache: the packages first
# (--no-check: the CMakeLists.txt files it checks against come with the sources below).
COPY tools/setup.sh tools/setup.sh
RUN tools/setup.sh build --no-check && rm -rf /var/lib/apt/lists/*

COPY CMakeLists.txt CMakeLists.txt
COPY cmake/ cmake/
COPY proto/ proto/
COPY src/ src/
COPY migrations/ migrations/
COPY schema/ schema/
COPY tools/ tools/
COPY tests/ tests/
COPY config/ config/

# Every library CMakeLists.txt asks for links, and comes from the packages installed above.
RUN tools/setup.sh build --check \
    && cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF \
    && cmake --build build -j"$(nproc)" --target gim-logic gim-gateway gimctl \
    && mkdir -p /out \
    && cp build/gim-logic build/gim-gateway build/tools/gimctl /out/

# ---- web stage: the web client's npm packages ----------------------------------
# protobufjs and long, without the dev dependencies (the browser tests' puppeteer-core). Node
# runs only here: the gateway serves web/ as static files.
FROM debian:bookworm AS web
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        nodejs npm ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /web
COPY web/package.json web/package-lock.json web/.npmrc ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error

# ---- runtime stage ------------------------------------------------------------
FROM debian:bookworm-slim

# Runtime libraries only (the -dev packages of the build stage depend on these).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libsqlite3-0 libprotobuf-c1 libnng1 libcyaml1 libjwt0 libjansson4 libpq5 \
        sqlite3 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system gim \
    && useradd --system --gid gim --home-dir /var/lib/gim --shell /usr/sbin/nologin gim \
    && mkdir -p /var/lib/gim /etc/gim-logic \
    && chown gim:gim /var/lib/gim

COPY --from=build /out/gim-logic /usr/local/bin/gim-logic
COPY --from=build /out/gimctl /usr/local/bin/gimctl
COPY --from=build /out/gim-gateway /usr/local/bin/gim-gateway
# The gateway serves these next to its WebSocket: /proto/ and the web client at /demo/
# (config/gateway-docker.yaml's web.root and web.proto_dir). A local web/node_modules is
# left out (.dockerignore); the web stage's is copied instead.
COPY proto/ /usr/local/share/gim/proto/
COPY web/ /usr/local/share/gim/web/
COPY --from=web /web/node_modules/ /usr/local/share/gim/web/node_modules/
COPY config/gim-gateway.example.yaml /etc/gim-logic/gim-gateway.example.yaml
COPY config/gateway-docker.yaml /etc/gim-logic/gim-gateway.yaml
# Migrations are embedded in the binary; these copies are for admins.
COPY migrations/ /usr/local/share/gim-logic/migrations/
COPY schema/ /usr/local/share/gim-logic/schema/
COPY config/gim-logic.example.yaml /etc/gim-logic/gim-logic.example.yaml
COPY config/docker.yaml /etc/gim-logic/gim-logic.yaml

VOLUME ["/var/lib/gim"]
WORKDIR /var/lib/gim

# gim-logic: 7400 requests (nng REQ/REP), 7401 publish (nng PUB), 7480 HTTP (/healthz)
# gim-gateway: 8080 TCP clients (be16), 8081 WebSocket clients (/ws), 8480 HTTP (/healthz)
EXPOSE 7400 7401 7480 8080 8081 8480

HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:7480/healthz || exit 1

USER gim
ENTRYPOINT ["/usr/local/bin/gim-logic"]
CMD ["--config", "/etc/gim-logic/gim-logic.yaml"]
