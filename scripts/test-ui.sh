#!/usr/bin/env bash
# make test-ui: the console in a real headless browser (Debian's chromium,
# driven from Go with chromedp) against a member on kfake. Installs chromium
# when missing (Debian, as root); without it and without root the test skips
# and says why. Screenshots go to $SAGAZ_UI_SCREENSHOTS (default
# bin/ui-screenshots).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

have_browser() {
  [ -n "${SAGAZ_CHROMIUM:-}" ] || command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null
}
if ! have_browser; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test-ui: installing Debian's chromium" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "test-ui: no chromium and cannot install it (not root, or no apt-get): the browser test will skip" >&2
  fi
fi

export SAGAZ_UI_SCREENSHOTS="${SAGAZ_UI_SCREENSHOTS:-$ROOT/bin/ui-screenshots}"
mkdir -p "$SAGAZ_UI_SCREENSHOTS"
t0=$SECONDS
go test -tags uitest -race -count=1 -timeout 5m -v -run 'TestConsoleInBrowser' "$@" ./console/ 2>&1 | grep -Ev '^=== (RUN|PAUSE|CONT)'
echo "test-ui: took $((SECONDS - t0))s; screenshots in $SAGAZ_UI_SCREENSHOTS" >&2
