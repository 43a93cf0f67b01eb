#!/usr/bin/env bash
# Builds the web console's vendored assets: installs the chart library
# (uPlot) at the version package-lock.json pins, with npm, and copies its
# dist files into coordinator/console/assets/vendor, where go:embed takes
# them. The copies are committed: building the daemon needs no npm.
# coordinator/console's TestVendoredAssetsCurrent fails when they differ
# from what this script makes.
set -euo pipefail
cd "$(dirname "$0")/../coordinator/console"
npm ci --no-audit --no-fund --ignore-scripts
mkdir -p assets/vendor
cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css assets/vendor/
cp node_modules/uplot/LICENSE assets/vendor/uPlot.LICENSE
echo "console assets: $(ls assets/vendor | tr '\n' ' ')"
