#!/usr/bin/env bash
# Installs Outpost as a systemd service on this host. Safe to run again: an
# existing config is never overwritten, so re-running it is also how to
# upgrade the binary and the unit.
#
#   sudo ./scripts/install.sh                      build from this checkout and install
#   sudo ./scripts/install.sh --binary ./outpost   install a binary built elsewhere (e.g. cross-built for arm64)
#   ./scripts/install.sh --dry-run                 print what it would do; changes nothing (no root needed)
#
# What it does:
#   1. builds ./cmd/outpost (or takes --binary) and installs it as /usr/local/bin/outpost
#   2. creates the system user and group `outpost` (no login, no home directory)
#   3. creates /etc/outpost (root:outpost 0750) and, only if absent, /etc/outpost/outpost.yaml
#      from configs/outpost.yaml (root:outpost 0640); then checks the config with `outpost check`
#   4. installs configs/outpost.service as /etc/systemd/system/outpost.service
#   5. runs `systemctl daemon-reload`
# It does not enable or start the service; it prints the commands that do.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dst=/usr/local/bin/outpost
conf_dir=/etc/outpost
conf=$conf_dir/outpost.yaml
unit_dst=/etc/systemd/system/outpost.service
user=outpost

args="$*"
dry_run=false
binary=""
usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
	case "$1" in
	--dry-run | -n) dry_run=true ;;
	--binary)
		[ $# -ge 2 ] || { echo "install.sh: --binary needs a path" >&2; exit 2; }
		binary="$2"
		shift
		;;
	--binary=*) binary="${1#--binary=}" ;;
	-h | --help) usage; exit 0 ;;
	*) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done

# run prints a command, and runs it unless this is a dry run.
run() {
	printf '+'
	printf ' %q' "$@"
	printf '\n'
	if ! $dry_run; then "$@"; fi
}
note() { printf '%s\n' "$*"; }

if ! $dry_run && [ "$(id -u)" -ne 0 ]; then
	echo "install.sh: must run as root (try: sudo $0 $args, or --dry-run to see what it would do)" >&2
	exit 1
fi
$dry_run && note "dry run: nothing is changed"

# --- 1. binary ---------------------------------------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -n "$binary" ]; then
	[ -f "$binary" ] || { echo "install.sh: --binary $binary: no such file" >&2; exit 1; }
	src="$binary"
else
	command -v go >/dev/null || { echo "install.sh: go not found; install Go or pass --binary PATH" >&2; exit 1; }
	version=$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo dev)
	commit=$(git -C "$root" rev-parse HEAD 2>/dev/null || true)
	bi=github.com/outpost-edge/outpost/internal/buildinfo
	src="$tmp/outpost"
	run env -C "$root" CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X $bi.version=$version -X $bi.commit=$commit -X $bi.date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" -o "$src" ./cmd/outpost
fi
run install -D -m 0755 -o root -g root "$src" "$bin_dst"

# --- 2. user ----------------------------------------------------------------
if getent passwd "$user" >/dev/null; then
	note "user $user exists"
else
	nologin=$(command -v nologin || echo /usr/sbin/nologin)
	run useradd --system --user-group --no-create-home --home-dir /var/lib/outpost \
		--shell "$nologin" --comment "Outpost edge coordinator" "$user"
fi

# --- 3. config ----------------------------------------------------------------
run install -d -m 0750 -o root -g "$user" "$conf_dir"
if [ -e "$conf" ]; then
	note "$conf exists: left unchanged (the shipped example is configs/outpost.yaml)"
else
	run install -m 0640 -o root -g "$user" "$root/configs/outpost.yaml" "$conf"
fi
if ! $dry_run; then
	# Catch a config the new binary rejects before the service is restarted.
	if ! "$bin_dst" check --config "$conf"; then
		echo "install.sh: $conf has problems (above); fix them before starting or restarting outpost" >&2
		exit 1
	fi
else
	printf '+ %s\n' "$bin_dst check --config $conf"
fi

# --- 4. unit and 5. daemon-reload -----------------------------------------------
run install -D -m 0644 -o root -g root "$root/configs/outpost.service" "$unit_dst"
if [ -d /run/systemd/system ]; then
	run systemctl daemon-reload
else
	note "systemd is not running on this host: skipped systemctl daemon-reload"
fi

note ""
if [ -d /run/systemd/system ] && systemctl is-active --quiet outpost 2>/dev/null; then
	note "outpost is running: restart it to use the new binary and unit: systemctl restart outpost"
else
	note "next: systemctl enable --now outpost && journalctl -u outpost -f"
fi
