# syntax=docker/dockerfile:1
# sds-server image: built with the full Node image, run on the slim one with only dist/, proto/ and
# the production node_modules, as the unprivileged `node` user (uid/gid 1000).
#
#   docker build -t sds-server:local .
#   docker run --rm sds-server:local --help
#
# The demo (docker-compose.yml) mounts a config and sets APPMESH_SDS_SOCKET_PATH=/run/sds/sds.sock.
ARG NODE_VERSION=20.20.2

FROM node:${NODE_VERSION} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# The sources come before `npm ci`: its `prepare` step bundles dist/ (scripts/build.mjs, esbuild).
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/build.mjs ./scripts/build.mjs
COPY proto ./proto
COPY src ./src
RUN npm ci --no-audit --no-fund
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM node:${NODE_VERSION}-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY proto ./proto
# Socket directory (the compose demo's shared volume starts from this, owned by node) and the
# embedded CA's data directory.
RUN mkdir -p /run/sds /var/lib/sds-server && chown node:node /run/sds /var/lib/sds-server
USER node
ENTRYPOINT ["node", "dist/cli/main.js"]
