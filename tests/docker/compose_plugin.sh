#!/usr/bin/env bash
# Installs the Docker Compose v2 CLI plugin when `docker compose` does not answer, built from
# its Go module source (Debian ships only Compose v1). Offline CI only: a machine with Docker
# Desktop or docker-compose-plugin already has it. The binary is cached outside the repo.
set -euo pipefail

version="${COMPOSE_VERSION:-v2.40.3}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/streaminfer/docker"  # as tests/docker/standins.py
plugin_dir="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
binary="$cache/docker-compose-$version"

if docker compose version >/dev/null 2>&1; then
  exit 0
fi
if [ ! -x "$binary" ]; then
  command -v go >/dev/null || { echo "compose-plugin: go is needed to build Compose $version" >&2; exit 1; }
  work="$(mktemp -d)"
  trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
  echo "compose-plugin: building Docker Compose $version from github.com/docker/compose/v2 (a few minutes)" >&2
  module="github.com/docker/compose/v2@$version"
  src="$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "$module" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  cp -r "$src" "$work/src" && chmod -R u+w "$work/src"
  mkdir -p "$cache"
  (cd "$work/src" && CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$version" \
      -o "$binary.tmp" ./cmd)
  mv "$binary.tmp" "$binary"
fi
mkdir -p "$plugin_dir"
ln -sf "$binary" "$plugin_dir/docker-compose"
docker compose version
