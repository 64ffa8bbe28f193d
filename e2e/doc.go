// Package e2e holds the end-to-end tests of esbridge in a real browser:
// headless Chromium, driven by playwright-core from Node.js
// (browser/driver.mjs), opens a native EventSource on routes of esbridge
// processes that the tests start, kill, drain and restart, behind a small
// round-robin proxy of the tests, and the tests compare what the page
// recorded with what they published.
//
// TestRollingDeploy puts three esbridge instances behind a real load
// balancer, HAProxy, started with the configuration of docs/operations.md,
// and restarts them one after the other under hundreds of clients that
// reconnect as browsers do (E2E_LB_CLIENTS sets how many; 400 by
// default). It needs haproxy, and runs the esbridge binary with the race
// detector only when the test does, so that its memory figures without
// -race are the program's own.
//
// The tests need node, the npm packages of browser/ (npm ci) and Chromium
// (/usr/bin/chromium, or CHROMIUM); TestRollingDeploy needs haproxy:
// setup.sh installs them. Without them the tests are skipped, unless CI
// is set, when they fail. Kafka rows need a broker (see
// internal/brokertest). Set E2E_SCREENSHOT=1 to rewrite docs/demo.png.
//
// The package has no code outside its tests.
package e2e
