#!/usr/bin/env bash
# The one gate: installs the real test peers when missing (Debian packages),
# builds the example tasks, checks formatting, vet and staticcheck, cross-
# builds for the Arm edge hosts, and runs every test with the race detector.
#
#   ./scripts/test.sh            everything
#   ./scripts/test.sh -short     skip the slow suites (go test -short), the
#                                cross-build and the PostgreSQL link pass
#
# Extra arguments are passed to `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."

# step names what runs next and how long the one before it took; the
# last step's time and the total are printed on exit, also on failure.
t0=$EPOCHREALTIME
step_name="" step_start=$t0
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }'; }
step_done() {
  if [ -n "$step_name" ]; then printf -- '-- %s: %s\n' "$step_name" "$(elapsed "$step_start")"; fi
}
step() {
  step_done
  step_name="$*" step_start=$EPOCHREALTIME
  printf '\n== %s (at %s)\n' "$*" "$(elapsed "$t0")"
}
trap 'rc=$?; step_done; printf "== total: %s, exit %d\n" "$(elapsed "$t0")" "$rc"' EXIT

# --- test peers -------------------------------------------------------------
# binary -> Debian package
declare -A peers=(
  [mosquitto]=mosquitto
  [mosquitto_pub]=mosquitto-clients
  [mosquitto_sub]=mosquitto-clients
  [wat2wasm]=wabt
  [snmpd]=snmpd
  [snmpbulkwalk]=snmp
  [snmptrap]=snmp
  [snmpsimd]=snmpsim
  [etcd]=etcd-server
  [clang-14]=clang-14 # C example tasks (scripts/build-examples.sh)
  [wasm-ld-14]=lld-14
  [curl]=curl         # the README walkthrough (cmd/outpost/readme_e2e_test.go)
  [script]=bsdutils   # a terminal for the progress bar test
  [systemd-analyze]=systemd # the .deb's unit (scripts/deb); dpkg, unshare and nsenter are essential
  [bwrap]=bubblewrap  # the process execution environment (runtime/sandbox)
  [chromium]=chromium # the web console's browser tests (cmd/outpost/console_e2e_test.go)
)
# file (a glob) -> Debian package, for packages without a binary
declare -A peer_files=(
  ['/usr/lib/wasm32-wasi/crt1-reactor.o']=wasi-libc
  ['/usr/lib/llvm-14/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a']=libclang-rt-14-dev-wasm32
  # Rust example tasks: Debian's rustc with the wasm32 standard library
  ['/usr/bin/rustc']=rustc
  ['/usr/lib/rustlib/wasm32-unknown-unknown/lib/libstd-*.rlib']=libstd-rust-dev-wasm32
  # outpost-cloud on PostgreSQL: initdb and postgres for internal/pgtest
  ['/usr/lib/postgresql/*/bin/initdb']=postgresql
)
missing=()
for bin in "${!peers[@]}"; do
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ]; then
    missing+=("${peers[$bin]}")
  fi
done
for file in "${!peer_files[@]}"; do
  compgen -G "$file" >/dev/null || missing+=("${peer_files[$file]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  step "installing test peers: $pkgs"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo="sudo -n"
    else
      echo "missing Debian packages: $pkgs (run as root or: sudo apt-get install -y $pkgs)" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  $sudo apt-get install -y -q --no-install-recommends $pkgs ||
    { $sudo apt-get update -q && $sudo apt-get install -y -q --no-install-recommends $pkgs; }
  # The packages start system services we do not want holding ports.
  for svc in mosquitto snmpd etcd postgresql; do
    $sudo systemctl stop "$svc" >/dev/null 2>&1 || $sudo service "$svc" stop >/dev/null 2>&1 || true
  done
fi
export PATH="$PATH:/usr/sbin"
# AssemblyScript example tasks: asc from the npm registry, when npm exists
# (scripts/build-examples.sh skips them without asc, and says so).
if ! command -v asc >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  step "installing assemblyscript (npm)"
  npm install -g -q assemblyscript@0.28.20 || echo "npm install -g assemblyscript failed; the AssemblyScript examples are skipped" >&2
fi

# --- example tasks ----------------------------------------------------------
step "building example tasks"
./scripts/build-examples.sh --strict # the tests need every example

# --- static checks ----------------------------------------------------------
step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2
  echo "$unformatted" >&2
  exit 1
fi

step "go vet"
go vet ./...

step "staticcheck"
staticcheck_version=v0.8.2 # release 2026.2.2
go run "honnef.co/go/tools/cmd/staticcheck@$staticcheck_version" ./...

# -short leaves the cross-build to the full gate (about 22 s warm).
case " $* " in
*" -short "*) echo "(-short: the cross-build for the Arm hosts is left out)" ;;
*)
  step "cross-build for linux/arm64 and linux/arm"
  GOOS=linux GOARCH=arm64 go build -o /dev/null ./cmd/...
  GOOS=linux GOARCH=arm GOARM=7 go build -o /dev/null ./cmd/...
  ;;
esac

# --- tests ------------------------------------------------------------------
# -short runs four packages at once instead of one per core: what is left
# of its tests mostly waits on processes and timers (measured: 276 s of
# go test at -p 2, 177 s at -p 4, on two cores).
parallel=()
case " $* " in *" -short "*) parallel=(-p 4) ;; esac
step "go test -race"
go test -race -timeout 18m "${parallel[@]}" "$@" ./...

# The cloud-link suite again, against the control plane on PostgreSQL (the
# run above used badger): the two engines must behave the same. Without
# -race: the server's PostgreSQL code ran under it above (its own tests),
# and a thousand raced nodes on PostgreSQL outlast the fleet test's minute
# on two shared cores.
# A slow suite: -short leaves it out (the server's own tests ran on both
# engines above, on badger only under -short).
case " $* " in
*" -short "*) echo "(-short: the cloud-link suite on PostgreSQL is left out)" ;;
*)
  step "go test coordinator/remote on PostgreSQL"
  go test -timeout 12m "$@" ./coordinator/remote/ -args -cloud-store=postgres
  # 100,000 data-set items through a kill -9 of the server, on both
  # engines: about a minute, five under -race (which skips it).
  step "go test coordinator/remote/server: 100,000-item data set"
  go test -timeout 10m "$@" -run 'TestJob100kKill9' ./coordinator/remote/server/
  ;;
esac

# The Extism comparison is its own module (Extism stays out of go.mod);
# its benchmark runs in scripts/bench.sh, its checks here.
step "runtime/extismbench (nested module): vet and test"
(cd runtime/extismbench && go vet ./... && go test -timeout 5m ./...)
