#!/usr/bin/env bash
# Installs what the tests of e2e/ need, if it is missing: Debian's
# Chromium (/usr/bin/chromium) for the browser tests and Debian's HAProxy
# (haproxy) for TestRollingDeploy, with apt-get, as root or through sudo;
# and the npm packages of e2e/browser (npm ci, from package-lock.json). No
# browser is ever downloaded by npm or playwright. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
if [ ! -x /usr/bin/chromium ]; then missing+=(chromium); fi
if [ ! -x /usr/sbin/haproxy ] && ! command -v haproxy >/dev/null; then missing+=(haproxy); fi
if [ ${#missing[@]} -gt 0 ]; then
	sudo=""
	if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
	$sudo apt-get update
	$sudo apt-get install -y "${missing[@]}"
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
