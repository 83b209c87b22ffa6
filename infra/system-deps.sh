#!/bin/sh
# The Debian packages the test suite uses besides PyPI, checked before `make test` runs a test:
# the code sandbox (dataflywheel/verifiers/sandbox) runs candidates under bubblewrap, with
# setpriv when root, on /usr/bin/python3; the sample browser's test drives headless chromium.
# Nothing missing: prints nothing. Missing and root with apt-get: installs them. Otherwise
# prints the command to run and exits 1, so no test runs half-equipped.
set -eu

# Where the sandbox looks its tools up (supervisor.TOOL_PATH), not the caller's PATH.
sandbox_tool() { PATH=/usr/bin:/bin:/usr/sbin:/sbin command -v "$1" >/dev/null 2>&1; }

missing=""
sandbox_tool bwrap || missing="$missing bubblewrap"
sandbox_tool setpriv || missing="$missing util-linux"
[ -x /usr/bin/python3 ] || missing="$missing python3"
# tests/integration/test_api_browser.py takes either name from PATH.
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 ||
    missing="$missing chromium"

[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: installing$missing (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    # $missing is deliberately unquoted: one word per package.
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing
    exit 0
fi

echo "system-deps: the test suite needs Debian packages that are not installed:$missing" >&2
echo "run:  sudo apt-get update && sudo apt-get install -y --no-install-recommends$missing" >&2
exit 1
