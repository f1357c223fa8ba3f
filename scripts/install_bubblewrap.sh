#!/usr/bin/env bash
# bubblewrap (bwrap) sandboxes every training run. Install it where it is missing: as root with apt,
# else through passwordless sudo; otherwise say how (a campaign refuses to start without it).
set -euo pipefail
if command -v bwrap >/dev/null 2>&1; then
    exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null && exit 0
    elif sudo -n true 2>/dev/null; then
        sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null && exit 0
    fi
fi
echo "bubblewrap is not installed and could not be installed here: install it (Debian/Ubuntu:" \
     "sudo apt-get install bubblewrap; Fedora: sudo dnf install bubblewrap). Training runs are sandboxed with it." >&2
exit 0
