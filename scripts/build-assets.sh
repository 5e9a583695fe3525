#!/usr/bin/env bash
# Rebuild consent/static/ from the npm packages pinned in package.json.
# The output is committed, so running the service needs only Python; run this (via
# `make assets`) after changing package.json or consent/assets/.
set -euo pipefail
cd "$(dirname "$0")/.."
npm ci --no-audit --no-fund --silent
out=consent/static
rm -rf "$out/govuk"
mkdir -p "$out/govuk/assets"
cp node_modules/govuk-frontend/dist/govuk/govuk-frontend.min.js "$out/govuk/"
cp -r node_modules/govuk-frontend/dist/govuk/assets/images "$out/govuk/assets/"
npx sass --no-source-map --style=compressed --pkg-importer=node \
  consent/assets/app.scss "$out/app.css"
cp consent/assets/app.js "$out/app.js"
echo "assets written to $out/"
