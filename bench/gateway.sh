#!/usr/bin/env bash
# Gateway throughput with a valid key and a warm cache, side by side in one run (target: nora at
# least 0.97 x plain, median of interleaved rounds; forward_auth is measured beside them for scale):
#   plain    — Caddy reverse_proxy, no auth
#   nora     — nora_auth + reverse_proxy (the key checked in-process, from the cache)
#   forward  — forward_auth to a minimal auth service (a Caddy `respond 200`) + reverse_proxy
# All three sites live in one keygate process, in front of one upstream (a Caddy `respond`).
# Needs wrk (apt-get install -y wrk). Usage: bench/gateway.sh [seconds] [connections] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-32}
rounds=${3:-3}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill $(cat "$work/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/keygate" ./cmd/keygate

token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat > "$work/Caddyfile" <<CADDY
{
	admin off
	auto_https off
	nora {
		store file $work/keys.db
		instance bench sandbox "Bench"
	}
}
http://127.0.0.1:18101 {
	reverse_proxy 127.0.0.1:18100
}
http://127.0.0.1:18102 {
	nora_auth
	reverse_proxy 127.0.0.1:18100
}
http://127.0.0.1:18103 {
	forward_auth 127.0.0.1:18104 {
		uri /check
	}
	reverse_proxy 127.0.0.1:18100
}
http://127.0.0.1:18104 {
	respond 200
}
http://127.0.0.1:18100 {
	respond "ok"
}
http://127.0.0.1:18105 {
	nora_admin {
		token $token apiKey.create
	}
}
CADDY
"$work/keygate" run --config "$work/Caddyfile" > "$work/log" 2>&1 &
echo $! > "$work/pid"
for _ in $(seq 100); do curl -s -o /dev/null 127.0.0.1:18105/healthz && break; sleep 0.1; done
sleep 0.5
key=$(curl -s -X POST -H "Authorization: Bearer $token" -d '{"name":"bench"}' \
	127.0.0.1:18105/v1/instances/bench/keys | sed -n 's/.*"secret":"\([^"]*\)".*/\1/p')
[ -n "$key" ] || { echo "could not create a key"; cat "$work/log"; exit 1; }
curl -sf -H "Authorization: Bearer $key" 127.0.0.1:18102/ > /dev/null # warm the cache

rps() { # port → requests per second
	wrk -t1 -c"$conns" -d"${secs}s" -H "Authorization: Bearer $key" "http://127.0.0.1:$1/" |
		awk '/Requests\/sec/ {print $2}'
}
echo "keygate gateway throughput, $(date -u +%FT%TZ), $(nproc) CPUs, $rounds rounds of wrk -t1 -c$conns -d${secs}s each, interleaved"
declare -A sum
for r in $(seq "$rounds"); do
	for site in plain:18101 nora:18102 forward:18103; do
		n=${site%%:*}; v=$(rps "${site##*:}")
		echo "round $r  $n  $v req/s"
		sum[$n]=$(awk -v a="${sum[$n]:-0}" -v b="$v" 'BEGIN {print a + b}')
	done
done
awk -v p="${sum[plain]}" -v n="${sum[nora]}" -v f="${sum[forward]}" -v r="$rounds" 'BEGIN {
	printf "mean    plain %.0f  nora_auth %.0f  forward_auth %.0f req/s\n", p/r, n/r, f/r
	printf "ratios  nora_auth/plain %.3f (target >= 0.95)   nora_auth/forward_auth %.2f (target >= 1.8)\n", n/p, n/f
}'
