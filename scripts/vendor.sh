#!/usr/bin/env bash
# Fetches the pinned htmx and Pico CSS from the npm registry into mpm/static/vendor.
set -euo pipefail
HTMX=2.0.11
PICO=2.1.1
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "htmx.org@$HTMX" "@picocss/pico@$PICO" >/dev/null
mkdir htmx pico
tar xzf "htmx.org-$HTMX.tgz" -C htmx
tar xzf "picocss-pico-$PICO.tgz" -C pico
cp htmx/package/dist/htmx.min.js "$here/mpm/static/vendor/htmx-$HTMX.min.js"
cp pico/package/css/pico.min.css "$here/mpm/static/vendor/pico-$PICO.min.css"
echo "vendored htmx $HTMX and Pico $PICO"
