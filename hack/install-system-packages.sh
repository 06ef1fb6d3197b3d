#!/usr/bin/env bash
# Debian packages the tests start for real, each as a process of their own on 127.0.0.1 with a
# generated config: Prometheus, Alertmanager, openssl.
#
# None of them may run as a system service: a service would listen on every interface with the
# package's default config (Alertmanager on :9093, and :9094 for its cluster gossip) and would
# compete with the processes the tests start. So
#   - while apt-get installs, a policy-rc.d that answers 101 ("action forbidden") keeps the
#     maintainer scripts from starting any service (invoke-rc.d asks it), unless the machine
#     already has its own policy-rc.d, which is then left as it is;
#   - afterwards, when this run installed Alertmanager, its service is disabled at boot (systemd
#     and System V links) and stopped in case something started it anyway. An Alertmanager that
#     was installed before is the machine owner's and is left alone.
# Nothing is done when every binary is already there. Needs root (apt-get).
set -euo pipefail

PACKAGES=(prometheus prometheus-alertmanager openssl)
NO_SERVICE=(prometheus-alertmanager)

installed() {
	command -v prometheus >/dev/null && command -v prometheus-alertmanager >/dev/null &&
		command -v openssl >/dev/null
}

fresh=()
for service in "${NO_SERVICE[@]}"; do
	dpkg-query -W -f='${Status}' "$service" 2>/dev/null | grep -q 'install ok installed' || fresh+=("$service")
done

if ! installed; then
	policy=/usr/sbin/policy-rc.d
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# written by hack/install-system-packages.sh for one apt-get run\nexit 101\n' >"$policy"
		chmod 0755 "$policy"
		trap 'rm -f "$policy"' EXIT
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
fi

for service in ${fresh[@]+"${fresh[@]}"}; do
	if command -v systemctl >/dev/null && [ -e "/lib/systemd/system/$service.service" ]; then
		# Works without a running systemd too: then it only removes the boot links.
		systemctl disable "$service" >/dev/null 2>&1 || true
		if [ -d /run/systemd/system ]; then systemctl stop "$service" >/dev/null 2>&1 || true; fi
	fi
	if [ -e "/etc/init.d/$service" ]; then
		update-rc.d "$service" disable >/dev/null 2>&1 || true
		if [ ! -d /run/systemd/system ] && command -v service >/dev/null; then
			service "$service" stop >/dev/null 2>&1 || true
		fi
	fi
done
