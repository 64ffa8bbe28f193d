#!/usr/bin/env bash
# Installs what the browser tests of e2e/ need, if it is missing: Debian's
# Chromium (/usr/bin/chromium, with apt-get, as root or through sudo) and
# the npm packages of e2e/browser (npm ci, from package-lock.json). No
# browser is ever downloaded by npm or playwright. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x /usr/bin/chromium ]; then
	sudo=""
	if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
	$sudo apt-get update
	$sudo apt-get install -y chromium
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	echo "e2e/setup.sh: node and npm are needed (Node.js 20 or later)" >&2
	exit 1
fi

# npm ci starts from scratch each time: run it only when the lock file is
# newer than what is installed.
installed=browser/node_modules/.package-lock.json
if [ ! -f "$installed" ] || [ browser/package-lock.json -nt "$installed" ]; then
	(cd browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi
