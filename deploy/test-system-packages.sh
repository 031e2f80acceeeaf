#!/usr/bin/env bash
# What the deployment tests need from the system: a PostgreSQL server (initdb, pg_ctl) and a
# headless Chromium. Installed from Debian's packages when missing and this runs as root (CI,
# a fresh machine); otherwise it says what is missing and the tests that need it fail naming it.
set -euo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} for the deployment tests"
    apt-get update -qq || true  # a stale index still finds packages in the local mirror
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian's package starts a cluster of its own on 5432: the tests start their own servers
    if [[ " ${missing[*]} " == *" postgresql "* ]] && command -v pg_ctlcluster >/dev/null 2>&1; then
        pg_lsclusters -h 2>/dev/null | while read -r version name _; do pg_ctlcluster "$version" "$name" stop || true; done
    fi
else
    echo "the deployment tests need: ${missing[*]} (Debian: sudo apt-get install ${missing[*]}); they will fail without" >&2
fi
