#!/usr/bin/env bash
# Installs what imsbox and its tests need on a fresh Debian machine:
# the Debian peers the interop tests drive, then the package itself.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v tshark >/dev/null 2>&1 || need+=(tshark)
command -v sipsak >/dev/null 2>&1 || need+=(sipsak)
command -v baresip >/dev/null 2>&1 || need+=(baresip-core)
command -v linphonec >/dev/null 2>&1 || need+=(linphone-cli)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# the scale-out back ends the store contract tests start (imsbox.testing_backends)
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# the dispatcher front of the scale-out test (deploy/kamailio; dispatcher is in the base package)
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || need+=(kamailio)
# systemd-analyze verifies deploy/systemd's unit (tests/flows/test_deploy_files.py)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q
    $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test,interop,postgres,redis]'
