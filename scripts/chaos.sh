#!/bin/sh
# Chaos run of the cloud link: the real outpost-cloud enqueues 10,000 calls
# while the real daemon is killed with SIGKILL at random moments 20 times
# and the link is cut for minutes at a time. At the end every call must
# have exactly one recorded result, no idempotent call ran more times than
# it was interrupted, and no at-most-once call ran twice. It drives the
# same test as the small run in `go test ./cmd/outpost` (TestCloudChaos).
#
# Usage: scripts/chaos.sh [calls] [kills] [cuts] [cut_ms] [gap_ms]
# Defaults: 10000 calls, 20 kills, 3 cuts of 120000 ms, up to 15000 ms
# between faults (about 15 minutes in all).
set -eu
cd "$(dirname "$0")/.."
export OUTPOST_CHAOS_CALLS="${1:-10000}"
export OUTPOST_CHAOS_KILLS="${2:-20}"
export OUTPOST_CHAOS_CUTS="${3:-3}"
export OUTPOST_CHAOS_CUT_MS="${4:-120000}"
export OUTPOST_CHAOS_GAP_MS="${5:-15000}"
exec go test -count=1 -timeout 3h -run '^TestCloudChaos$' -v ./cmd/outpost
