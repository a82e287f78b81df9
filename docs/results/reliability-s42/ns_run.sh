#!/bin/sh
# Runs a script in a private mount namespace (needs root: unshare -m) whose /etc/hosts is a scratch copy the
# script rewrites in place, so the real `saga serve` resolves the discovery name through glibc as it would
# a Kubernetes headless service. Usage: sh ns_run.sh SCRIPT.py
H=$(mktemp /tmp/saga-hosts.XXXXXX)
cp /etc/hosts "$H"
cd "$(dirname "$0")" || exit 1
unshare -m sh -c "mount --bind '$H' /etc/hosts && exec timeout 90 python3 $*"
status=$?
rm -f "$H"
exit $status
