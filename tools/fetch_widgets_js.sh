#!/usr/bin/env bash
# Fetch the JavaScript that renders ipywidgets in the static website, from the npm
# registry, at build time (it is not committed): require.js and the widget manager's
# embed-amd.js. The website then needs no CDN.
set -euo pipefail
dest=${1:-book/_widgets_js}
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent @jupyter-widgets/html-manager@1.0.15 requirejs@2.3.8 >/dev/null
tar -xzf jupyter-widgets-html-manager-1.0.15.tgz
cp package/dist/embed-amd.js "$OLDPWD/$dest/embed-amd.js"
rm -rf package
tar -xzf requirejs-2.3.8.tgz
cp package/require.js "$OLDPWD/$dest/require.js"
echo "widget JavaScript in $dest: $(ls "$OLDPWD/$dest" | tr '\n' ' ')"
