#!/usr/bin/env bash
# Benchmarks, each figure beside its baseline measured in the same runs, as a
# ratio. Every test binary is built once and run COUNT times; each run
# measures both sides of every pair one after the other, so the two sides are
# interleaved (A B A B ...) and a ratio is only taken within one run.
# scripts/benchpair prints, for each pair of scripts/bench.pairs, the median
# figure, the median baseline and the min/median/max of the ratio.
#
#   ./scripts/bench.sh                   all suites (COUNT=3, BENCHTIME=200ms)
#   ./scripts/bench.sh -quick            one run, shorter benchmarks
#   SUITES="daemon mqtt" ./scripts/bench.sh
#   COUNT=5 BENCHTIME=1s RESULTS=out.txt ./scripts/bench.sh   (keeps the raw output)
#
# Suites:
#   daemon    warm calls through the engine and the scheduler, one MQTT device
#   mqtt      50 MQTT devices against Mosquitto doing the same echo;
#             RSS per idle client against Mosquitto
#   fleet     5,000 devices holding shadows, against Mosquitto doing the
#             same round trips: RSS per device, after reconnects, shadow
#             updates/s, route latency
#   runtime   host functions, commands, fresh instances
#   deploy    deploy to first call, cold and with a warm disk cache
#   extism    no-op call throughput on 2 cores vs Extism's Go SDK (nested
#             module runtime/extismbench, its own go.mod)
#   durable   journal, journaled calls, the cloud link
#   cloud     outpost-cloud on PostgreSQL (one and two replicas) vs badger;
#             10,000 simulated nodes, a call to each
#   await     10,000 calls waiting: suspended vs parked; need-by misses, slack vs first-come
#   telemetry gNMI, SNMP, the telemetry store
#   backup    an online backup of 100k journaled calls vs tar while stopped
#   console   the web console in headless chromium: time to first render vs
#             an empty static page served the same way; its compressed weight
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
quick=0
if [ "${1:-}" = "-quick" ]; then quick=1; fi
count=${COUNT:-$([ $quick = 1 ] && echo 1 || echo 3)}
benchtime=${BENCHTIME:-$([ $quick = 1 ] && echo 50ms || echo 200ms)}
suites=${SUITES:-"daemon mqtt fleet runtime deploy extism durable cloud await telemetry backup console"}
export PATH="$PATH:/usr/sbin"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
has() { case " $suites " in *" $1 "*) return 0 ;; esac; return 1; }
# n N: N iterations, a tenth of them (at least 1) in quick mode.
n() { if [ $quick = 1 ]; then echo "$(( ($1 + 9) / 10 ))x"; else echo "${1}x"; fi; }

# The deploy benchmark and others read examples/tasks/build.
if ! ./scripts/build-examples.sh > "$out/build.log" 2>&1; then
  echo "bench: scripts/build-examples.sh failed:" >&2; tail -20 "$out/build.log" >&2; exit 1
fi

runs=0
# bench DIR REGEXP BENCHTIME [test flags...]: COUNT runs of DIR's test binary.
bench() {
  local dir=$1 re=$2 bt=$3
  shift 3
  local bin
  bin="$out/$(echo "$dir" | tr '/.' '__').test"
  if [ ! -x "$bin" ] && ! (cd "$dir" && go test -c -o "$bin" .) > "$out/last.txt" 2>&1; then
    echo "bench: building the tests of $dir failed:" >&2; tail -20 "$out/last.txt" >&2; return
  fi
  runs=$((runs + 1))
  local i
  for i in $(seq "$count"); do
    echo "benchpair-run: $runs.$i" >> "$out/all.txt"
    if ! (cd "$dir" && "$bin" -test.run '^$' -test.bench "$re" -test.benchtime "$bt" "$@") > "$out/last.txt" 2>&1; then
      echo "bench: $re in $dir failed:" >&2; tail -20 "$out/last.txt" >&2
    fi
    grep -E '^Benchmark' "$out/last.txt" >> "$out/all.txt" || true
  done
}

echo "== running benchmarks (count=$count, benchtime=$benchtime, suites: $suites) $(date -u +%Y-%m-%dT%H:%MZ)"
if has daemon; then
  bench coordinator 'BenchmarkCall$' "$benchtime"
  bench coordinator 'BenchmarkMQTTRoundTrip' "$(n 20000)"
fi
if has mqtt; then
  bench coordinator 'BenchmarkMQTTFleet' "$(n 20000)"
  # 2,000 idle clients, Mosquitto then the embedded broker, TCP then TLS
  # (Mosquitto's 6,000 TLS handshakes take about 5 minutes a run here); the
  # daemon's systemd unit sets the same GODEBUG.
  GODEBUG=adaptivestackstart=0 bench devices 'BenchmarkIdleClientMemory' 1x
fi
if has fleet; then
  # A file per device in the generator and in the broker: raise the open
  # files limit (children such as Mosquitto inherit it; Go raises its own).
  want=$(( ${OUTPOST_BENCH_FLEET:-5000} * 2 + 1024 ))
  if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
    ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
      echo "bench: fleet needs $want open files, ulimit -n is $(ulimit -n) (hard $(ulimit -Hn))" >&2
    fi
  fi
  GODEBUG=adaptivestackstart=0 bench coordinator 'BenchmarkDeviceFleet' 1x
fi
if has runtime; then
  bench runtime 'BenchmarkHostCall|BenchmarkCommand|BenchmarkFreshInstance' "$benchtime"
fi
if has deploy; then
  bench coordinator 'BenchmarkDeploy/.*/tiny/' "$(n 100)"
  bench coordinator 'BenchmarkDeploy/.*/go/' "$(n 5)"
fi
if has extism; then
  bench runtime/extismbench 'BenchmarkNoopThroughput' "$benchtime" -test.cpu 2
fi
if has durable; then
  bench coordinator/calls 'BenchmarkJournalWrite|BenchmarkDurableCall' "$(n 3000)"
  bench coordinator/remote 'BenchmarkEnqueueToStart' "$(n 200)"
  bench coordinator/remote 'BenchmarkLinkThroughput' "$(n 5000)"
  bench coordinator/remote 'BenchmarkOutboxFlush' "$(n 18000)"
fi
if has cloud; then
  bench coordinator/remote/server 'BenchmarkCloudStore' "$(n 5000)"
  bench coordinator/remote/server 'BenchmarkDeviceMessages' "$(n 20000)"
  # 10,000 simulated nodes long-polling server processes: about 20 to 30 s
  # a set-up, three set-ups a run.
  bench coordinator/remote/server 'BenchmarkFleet10k' 1x
fi
if has await; then
  bench coordinator 'BenchmarkWaitingCalls' 1x
  bench coordinator/calls 'BenchmarkNeedByMisses' "$(n 20)"
fi
if has telemetry; then
  bench telemetry 'BenchmarkGNMITo|BenchmarkGNMIRawStream|BenchmarkPipelineTo' "$(n 200000)"
  bench telemetry/snmp 'BenchmarkPollSimulatedDevices|BenchmarkRawBulkWalkSnmpd|BenchmarkPollerWalkSnmpd' 1x
  bench telemetry/tsdb 'Benchmark' "$benchtime"
fi
if has backup; then
  bench coordinator/backup 'BenchmarkBackup' "$(n 5)"
fi
if has console; then
  bench coordinator/console 'BenchmarkConsoleFirstRender' "$(n 20)"
fi
if [ -n "${RESULTS:-}" ]; then cp "$out/all.txt" "$RESULTS"; fi

echo
echo "== figure vs baseline, ratio figure/baseline min/median/max over $count interleaved runs"
go run ./scripts/benchpair -pairs scripts/bench.pairs "$out/all.txt"

# Idle RSS of the daemon with the embedded broker and the echo task, after
# ten minutes (IDLE_MINUTES) idle: scripts/idle-rss.sh.
echo
echo "== idle RSS of outpost run (embedded broker, echo task)"
./scripts/idle-rss.sh
