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

run() { # package regexp benchtime
  go test -run '^$' -bench "$2" -benchtime "$3" -count "$count" "$1" | tee -a "$out/raw.txt" | grep -E '^Benchmark' >> "$out/all.txt" || true
}

echo "== running benchmarks (count=$count)"
run ./coordinator 'BenchmarkCall$' "$benchtime"
run ./coordinator 'BenchmarkMQTTRoundTrip' 20000x
if [ -f runtime/bench_test.go ]; then run ./runtime 'Benchmark' "$benchtime"; fi

# median NAME UNIT: the median of the column whose unit is UNIT.
median() {
  grep -E "^$1-[0-9]+ " "$out/all.txt" | awk -v unit="$2" '{for (i=3;i<=NF;i++) if ($(i+1)==unit) print $i}' |
    sort -g | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]}'
}

# pair TITLE BASELINE-NAME NAME UNIT LOWER-IS-BETTER TARGET
pair() {
  local b v
  b=$(median "$2" "$4"); v=$(median "$3" "$4")
  if [ -z "$b" ] || [ -z "$v" ]; then printf '%-58s (missing)\n' "$1"; return; fi
  awk -v t="$1" -v b="$b" -v v="$v" -v u="$4" -v tgt="$6" 'BEGIN {
    printf "%-44s %12.2f %-8s vs baseline %12.2f  ratio %.2fx   %s\n", t, v, u, b, v/b, tgt }'
}

echo
echo "== results (median of $count)"
pair "call via scheduler (ns/op) vs raw wazero"  BenchmarkCall/raw-wazero BenchmarkCall/scheduler ns/op 1 "target: < +3000 ns"
pair "call via engine (ns/op) vs raw wazero"     BenchmarkCall/raw-wazero BenchmarkCall/engine ns/op 1 ""
pair "async calls via scheduler (ns/op)"         BenchmarkCall/raw-wazero BenchmarkCall/scheduler-async ns/op 1 ""
pair "MQTT round trip QoS 0 (msgs/s) vs bare broker" BenchmarkMQTTRoundTrip/throughput/bare-broker BenchmarkMQTTRoundTrip/throughput/outpost msgs/s 0 "target: >= 0.5x"
pair "MQTT round trip p50 (µs) vs bare broker"   BenchmarkMQTTRoundTrip/latency/bare-broker BenchmarkMQTTRoundTrip/latency/outpost p50-µs 1 "target: <= 2x"
pair "MQTT round trip p99 (µs) vs bare broker"   BenchmarkMQTTRoundTrip/latency/bare-broker BenchmarkMQTTRoundTrip/latency/outpost p99-µs 1 ""

# Idle RSS of the daemon with the embedded broker and the echo task.
echo
echo "== idle RSS of outpost run (embedded broker, echo task)"
go build -o "$out/outpost" ./cmd/outpost
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
cat > "$out/outpost.yaml" <<YAML
data_dir: $out/data
admin: {listen: "127.0.0.1:$(port)"}
mqtt: {broker: {listen: "127.0.0.1:$(port)"}}
tasks: [{name: echo, module: builtin:echo}]
routes: [{topic: "devices/+/in", task: echo, reply: "devices/{1}/out"}]
YAML
"$out/outpost" run --config "$out/outpost.yaml" 2>"$out/run.log" &
pid=$!
sleep 5
rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
kill -TERM "$pid"; wait "$pid" || true
awk -v kb="$rss_kb" 'BEGIN { printf "%-44s %12.1f MB      target   30.0 MB     ratio %.2fx\n", "idle RSS", kb/1024, kb/1024/30 }'
