#!/bin/sh
# Copy the hub's source into this add-on folder, so the Supervisor can build it:
#   deploy/homeassistant-addon/make-addon.sh && cp -r deploy/homeassistant-addon /addons/telemetry_hub
# (on Home Assistant OS, /addons is the Samba or SSH add-on's "addons" share).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
rm -rf "$here/hub-src"
mkdir -p "$here/hub-src"
cp -r "$root/hub" "$root/pyproject.toml" "$root/requirements.lock" "$root/README.md" "$here/hub-src/"
find "$here/hub-src" -name __pycache__ -prune -exec rm -rf {} +
echo "Ready: copy $here to /addons/telemetry_hub and install 'Telemetry hub' from Local add-ons."
