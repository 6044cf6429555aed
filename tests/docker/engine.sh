#!/usr/bin/env bash
# Start a Docker engine for CI when none answers, and stop only what this started.
#   tests/docker/engine.sh start   # dockerd in the background (needs root and Debian's docker.io)
#   tests/docker/engine.sh stop
set -euo pipefail
state="${TMPDIR:-/tmp}/streaminfer-dockerd"

answers() { docker info >/dev/null 2>&1; }

case "${1:-}" in
  start)
    if answers; then
      echo "engine: a Docker engine already answers; using it" >&2
      exit 0
    fi
    command -v dockerd >/dev/null || { echo "engine: dockerd not found (apt-get install docker.io)" >&2; exit 1; }
    mkdir -p "$state"
    dockerd >"$state/dockerd.log" 2>&1 &
    echo $! >"$state/pid"  # written at once: a start that times out is still stopped
    for _ in $(seq 1 60); do
      if answers; then
        echo "engine: started dockerd (pid $(cat "$state/pid"), log $state/dockerd.log)" >&2
        exit 0
      fi
      sleep 1
    done
    echo "engine: dockerd did not answer within 60 s; its log ends:" >&2
    tail -20 "$state/dockerd.log" >&2
    exit 1
    ;;
  stop)
    [ -f "$state/pid" ] || exit 0
    pid="$(cat "$state/pid")"
    rm -f "$state/pid"
    ours() { [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; }  # not a reused pid
    ours || exit 0
    kill "$pid"
    for _ in $(seq 1 30); do
      ours || break
      sleep 1
    done
    if ours; then kill -9 "$pid"; fi
    echo "engine: stopped the dockerd this started" >&2
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
