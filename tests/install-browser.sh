#!/usr/bin/env bash
# The Dashboard's browser test drives Debian's chromium package (Playwright's own browser
# download is not reachable from every machine). Install it when missing, as root or with
# passwordless sudo; elsewhere say so loudly: tests/test_dashboard.py then skips with the reason.
set -uo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ]; then as_root=(); elif sudo -n true 2>/dev/null; then as_root=(sudo -n); else
  echo "WARNING: chromium is missing and this user cannot install it (not root, no sudo):" \
       "the Dashboard's browser test will be skipped. Install it with: apt-get install chromium" >&2
  exit 0
fi
echo "installing chromium for the Dashboard's browser test (apt-get install chromium)..."
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get install -y -q chromium >/dev/null 2>&1 \
  || { "${as_root[@]}" apt-get update -q >/dev/null 2>&1 && "${as_root[@]}" apt-get install -y -q chromium >/dev/null 2>&1; } \
  || echo "WARNING: apt-get install chromium failed: the Dashboard's browser test will be skipped." >&2
exit 0
