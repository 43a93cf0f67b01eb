#!/usr/bin/env bash
# Idle RSS of `outpost run` (embedded broker, echo task, one route), sampled
# at 5 s and then every minute up to IDLE_MINUTES (default 10); the figure
# quoted is the last one. BIN names an outpost binary to measure instead of
# building this tree's; RULES=1 adds two placement rules to the config.
#
#   ./scripts/idle-rss.sh
#   IDLE_MINUTES=3 BIN=/tmp/outpost ./scripts/idle-rss.sh
#   IDLE_MINUTES=0 RULES=1 ./scripts/idle-rss.sh
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${IDLE_MINUTES:-10}
out=$(mktemp -d)
bin=${BIN:-}
if [ -z "$bin" ]; then
  bin=$out/outpost
  go build -o "$bin" ./cmd/outpost
fi
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
cat > "$out/outpost.yaml" <<YAML
data_dir: $out/data
admin: {listen: "127.0.0.1:$(port)"}
mqtt: {broker: {listen: "127.0.0.1:$(port)"}}
tasks: [{name: echo, module: builtin:echo}]
routes: [{topic: "devices/+/in", task: echo, reply: "devices/{1}/out"}]
YAML
if [ "${RULES:-0}" = 1 ]; then
  cat >> "$out/outpost.yaml" <<YAML
placement:
  rules:
    - {name: devices-stay, when: task.devices, run: [local]}
    - {name: large, when: "call.input_size > 1048576 && envs['process'].load < 0.5", run: [process, local]}
YAML
fi
"$bin" run --config "$out/outpost.yaml" 2>"$out/run.log" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$out"' EXIT
rss() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
sleep 5
first=$(rss)
printf '%-44s %12.1f MB\n' "idle RSS after 5 s" "$(echo "$first" | awk '{print $1/1024}')"
last=$first
for m in $(seq 1 "$minutes"); do
  sleep $((m == 1 ? 55 : 60))
  last=$(rss)
  printf '%-44s %12.1f MB\n' "idle RSS after $m min" "$(echo "$last" | awk '{print $1/1024}')"
done
awk -v kb="$last" -v m="$minutes" 'BEGIN { printf "%-44s %12.1f MB      target   30.0 MB     ratio %.2fx\n", "idle RSS (" m " min)", kb/1024, kb/1024/30 }'
