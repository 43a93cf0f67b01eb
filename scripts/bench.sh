#!/usr/bin/env bash
# Benchmarks, each figure beside its baseline measured in the same run, as a
# ratio. The machines are noisy: every benchmark runs COUNT times (default 5)
# and the median is quoted.
#
#   ./scripts/bench.sh              all
#   COUNT=3 BENCHTIME=1s ./scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
count=${COUNT:-5}
benchtime=${BENCHTIME:-1s}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

run() { # package regexp benchtime [go test flags...]
  local pkg=$1 re=$2 bt=$3
  shift 3
  if ! go test -run '^$' -bench "$re" -benchtime "$bt" -count "$count" "$@" "$pkg" > "$out/last.txt" 2>&1; then
    echo "benchmarks of $pkg failed:" >&2; tail -20 "$out/last.txt" >&2
  fi
  grep -E '^Benchmark' "$out/last.txt" >> "$out/all.txt" || true
}

# Which suites: all by default, or a list such as "daemon runtime".
#   daemon    warm calls through the scheduler and MQTT round trips
#   runtime   host functions, commands, fresh instances
#   deploy    deploy to first call, cold and with a warm disk cache
#   extism    no-op call throughput on 2 cores vs Extism's Go SDK (nested
#             module runtime/extismbench, its own go.mod)
#   durable, telemetry
suites=${SUITES:-"daemon runtime deploy extism durable telemetry"}
has() { case " $suites " in *" $1 "*) return 0 ;; esac; return 1; }

echo "== running benchmarks (count=$count, suites: $suites)"
if has daemon; then
  run ./coordinator 'BenchmarkCall$' "$benchtime"
  run ./coordinator 'BenchmarkMQTTRoundTrip' 20000x
fi
if has runtime; then
  run ./runtime 'BenchmarkHostCall|BenchmarkCommand|BenchmarkFreshInstance' "$benchtime"
fi
if has deploy; then
  run ./coordinator 'BenchmarkDeploy/.*/tiny/' 100x
  run ./coordinator 'BenchmarkDeploy/.*/go/' 5x
fi
if has extism; then
  (cd runtime/extismbench && run . 'BenchmarkNoopThroughput' "$benchtime" -cpu 2)
fi
if has durable; then
  run ./coordinator/calls 'BenchmarkJournalWrite|BenchmarkDurableCall' 3000x
  run ./coordinator/remote 'BenchmarkEnqueueToStart' 200x
  run ./coordinator/remote 'BenchmarkLinkThroughput' 5000x
  run ./coordinator/remote 'BenchmarkOutboxFlush' 18000x
fi
if has telemetry; then
  run ./telemetry 'BenchmarkGNMITo|BenchmarkGNMIRawStream|BenchmarkPipelineTo' 1000000x
  run ./telemetry/snmp 'BenchmarkPollSimulatedDevices|BenchmarkRawBulkWalkSim|BenchmarkRawBulkWalkSnmpd|BenchmarkPollerWalkSnmpd' 3x
  run ./telemetry/tsdb 'Benchmark' "$benchtime"
fi

# median NAME UNIT: the median of the column whose unit is UNIT.
median() {
  grep -E "^$1-[0-9]+ " "$out/all.txt" | awk -v unit="$2" '{for (i=3;i<=NF;i++) if ($(i+1)==unit) print $i}' |
    sort -g | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]}' || true
}

# pair TITLE BASELINE-NAME NAME UNIT LOWER-IS-BETTER TARGET
pair() {
  local b v
  b=$(median "$2" "$4"); v=$(median "$3" "$4")
  if [ -z "$b" ] || [ -z "$v" ]; then return; fi # suite not run
  awk -v t="$1" -v b="$b" -v v="$v" -v u="$4" -v tgt="$6" 'BEGIN {
    printf "%-44s %12.2f %-8s vs baseline %12.2f  ratio %.2fx   %s\n", t, v, u, b, v/b, tgt }'
}

echo
echo "== results (median of $count)"
pair "call via scheduler (ns/op) vs raw wazero"  BenchmarkCall/raw-wazero BenchmarkCall/scheduler ns/op 1 "target: < +2000 ns"
pair "call via engine (ns/op) vs raw wazero"     BenchmarkCall/raw-wazero BenchmarkCall/engine ns/op 1 "registry + pool; target: < +2000 ns"
pair "async calls via scheduler (ns/op)"         BenchmarkCall/raw-wazero BenchmarkCall/scheduler-async ns/op 1 ""
pair "MQTT round trip QoS 0 (msgs/s) vs bare broker" BenchmarkMQTTRoundTrip/throughput/bare-broker BenchmarkMQTTRoundTrip/throughput/outpost msgs/s 0 "target: >= 0.5x"
pair "MQTT round trip p50 (µs) vs bare broker"   BenchmarkMQTTRoundTrip/latency/bare-broker BenchmarkMQTTRoundTrip/latency/outpost p50-µs 1 "target: <= 2x"
pair "MQTT round trip p99 (µs) vs bare broker"   BenchmarkMQTTRoundTrip/latency/bare-broker BenchmarkMQTTRoundTrip/latency/outpost p99-µs 1 ""
pair "host function call (ns/op) vs plain call"  BenchmarkHostCall/echo-baseline BenchmarkHostCall/now ns/op 1 ""
pair "command module call (ns/op) vs reactor"    BenchmarkCall/raw-wazero BenchmarkCommand ns/op 1 "per-call instantiate"
pair "fresh-instance call (ns/op) vs raw wazero"  BenchmarkFreshInstance/raw-wazero BenchmarkFreshInstance/engine-tuned ns/op 1 "target: < 10000 ns"
pair "fresh-instance call vs raw wazero tuned"    BenchmarkFreshInstance/raw-wazero-tuned BenchmarkFreshInstance/engine-tuned ns/op 1 ""
pair "fresh-instance call, engine untuned"        BenchmarkFreshInstance/raw-wazero BenchmarkFreshInstance/engine-default ns/op 1 ""
pair "fresh-instance CPU (cpu-ns/op) vs raw tuned" BenchmarkFreshInstance/raw-wazero-tuned BenchmarkFreshInstance/engine-tuned cpu-ns/op 1 "all threads, GC included"
pair "deploy->first call, tiny, cold (ns/op)"     BenchmarkDeploy/raw-wazero/tiny/cold BenchmarkDeploy/outpost/tiny/cold ns/op 1 ""
pair "deploy->first call, tiny, warm disk cache"  BenchmarkDeploy/raw-wazero/tiny/warm-disk BenchmarkDeploy/outpost/tiny/warm-disk ns/op 1 ""
pair "deploy->first call, Go, cold (ns/op)"       BenchmarkDeploy/raw-wazero/go/cold BenchmarkDeploy/outpost/go/cold ns/op 1 ""
pair "deploy->first call, Go, warm disk cache"    BenchmarkDeploy/raw-wazero/go/warm-disk BenchmarkDeploy/outpost/go/warm-disk ns/op 1 ""
pair "no-op calls/s, 2 cores, daemon vs Extism"   BenchmarkNoopThroughput/extism BenchmarkNoopThroughput/outpost calls/s 0 "target: >= 10x"
pair "no-op calls/s, 2 cores, engine vs Extism"   BenchmarkNoopThroughput/extism BenchmarkNoopThroughput/outpost-engine calls/s 0 ""
pair "journal write (ns/op) group commit vs fsync each" BenchmarkJournalWrite/fsync_each BenchmarkJournalWrite/group_commit ns/op 1 ""
pair "journaled call (ns/op) vs scheduler only"  BenchmarkDurableCall/scheduler_only BenchmarkDurableCall/journaled ns/op 1 ""
pair "enqueue-to-start p50 (ms) long poll vs 1s poll" BenchmarkEnqueueToStart/fixed_1s_poll BenchmarkEnqueueToStart/long_poll p50_ms 1 "target: p50 < 10 ms"
pair "enqueue-to-start p99 (ms) long poll vs 1s poll" BenchmarkEnqueueToStart/fixed_1s_poll BenchmarkEnqueueToStart/long_poll p99_ms 1 ""
pair "durable calls/s through the link vs no journal" BenchmarkLinkThroughput/no_journal BenchmarkLinkThroughput/journal calls/s 0 "target: 5000/s"
pair "outbox flush (results/s) batched vs one PUT each" BenchmarkOutboxFlush/put_each BenchmarkOutboxFlush/batch_256 results/s 0 ""
pair "gNMI agent -> store (updates/s) vs discard" BenchmarkGNMIToDiscard BenchmarkGNMIToStore updates/s 0 "target: 200k/s"
pair "gNMI agent -> store vs bare gRPC client"   BenchmarkGNMIRawStream BenchmarkGNMIToStore updates/s 0 ""
pair "telemetry pipeline, no gRPC (updates/s)"   BenchmarkPipelineToDiscard BenchmarkPipelineToStore updates/s 0 ""
pair "SNMP 200 simulated devices vs raw bulk walk (values/s)" BenchmarkRawBulkWalkSim BenchmarkPollSimulatedDevices values/s 0 ""
pair "SNMP poller walk of snmpd vs raw gosnmp (values/s)" BenchmarkRawBulkWalkSnmpd BenchmarkPollerWalkSnmpd values/s 0 ""

# Idle RSS of the daemon with the embedded broker and the echo task, after
# ten minutes (IDLE_MINUTES) idle: scripts/idle-rss.sh.
echo
echo "== idle RSS of outpost run (embedded broker, echo task)"
./scripts/idle-rss.sh
