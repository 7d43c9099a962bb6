#!/usr/bin/env bash
# Install the optional reference tools from Debian: wrk (second load generator), nginx with
# the stream module (reference HTTP server and L4 proxy). Needs root; safe to re-run.
set -euo pipefail
if command -v wrk >/dev/null && command -v nginx >/dev/null && [ -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq wrk nginx-light libnginx-mod-stream >/dev/null
# Debian starts nginx as a service on install; the benchmark runs its own instances.
(systemctl stop nginx 2>/dev/null || service nginx stop 2>/dev/null) || true
