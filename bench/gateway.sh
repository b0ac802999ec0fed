#!/usr/bin/env bash
# Gateway throughput with a valid key and a warm cache, side by side in one run, median of
# interleaved rounds (targets: nora_auth at least 0.97 x plain; nora_auth with a key using every
# per-key feature at least 0.95 x plain; forward_auth is measured beside them for scale):
#   plain    — Caddy reverse_proxy, no auth
#   nora     — nora_auth + reverse_proxy, a key with no limits (checked in-process, from the cache);
#              usage counting is on (the default: a counter bump per request, flushed every 5 s)
#   nousage  — the same in a second keygate process whose nora app says `usage off` (its own
#              file store and its own `respond` upstream, so both paths are one process each)
#   limited  — the same site, a key with a rate limit and a quota far above the offered load
#              (counted locally, leased from the store in the background)
#   full     — every per-key feature at once: a route requiring a scope, a key with that scope,
#              an IP allowlist (127.0.0.0/8), metadata (set as placeholders), a rate limit and
#              a quota far above the offered load, usage counted
#   forward  — forward_auth to a minimal auth service (a Caddy `respond 200`) + reverse_proxy
# All the sites but nousage live in one keygate process on the file store, in front of one
# upstream (a Caddy `respond`). A non-2xx answer makes the run fail. At the end the usage
# endpoints of both processes are asked for the key's counts: the first must have counted the
# nora rounds, the second nothing.
# Needs wrk (apt-get install -y wrk).
#   bench/gateway.sh [seconds per site and round, 2] [connections, 32] [rounds, 15]
# With PIN=1 (and taskset, from util-linux) the keygate processes run on CPU 0 with
# GOMAXPROCS=1 and wrk on CPU 1: on a 2-core machine the two then stop competing for the same
# core. Each round runs plain between every two other sites and compares each site with the
# mean of the plain runs just before and after it; the median of those ratios over the rounds
# is the figure (the machine's drift cancels out of it). Beside req/s, each site gets the
# keygate process' CPU time per request. Then PAIRS paired rounds (default 10; PAIRS=0 skips
# them): two identical processes on the same CPU driven at once, one plain and one not, then
# swapped (below). KEYGATE=path runs that binary instead of building ./cmd/keygate; STORE=redis
# runs every process on a redis-server of the script's own instead of the file store.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-2}
conns=${2:-32}
rounds=${3:-15}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill $(cat "$work/pid" "$work/pid2" "$work/pid3" "$work/pid4" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
if [ -n "${KEYGATE:-}" ]; then
	cp "$KEYGATE" "$work/keygate" # a binary built elsewhere (another commit, a variant)
else
	go build -o "$work/keygate" ./cmd/keygate
fi

token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
# STORE=redis puts each process' keys in a database of its own on a redis-server started here
# (on wrk's CPU with PIN=1) instead of a file store of its own.
storeline() { # a name for the process' store → its Caddyfile store line
	if [ "${STORE:-file}" = redis ]; then
		case $1 in main) echo "redis redis://127.0.0.1:18190/1" ;; twin) echo "redis redis://127.0.0.1:18190/2" ;; *) echo "redis redis://127.0.0.1:18190/3" ;; esac
	else
		echo "file $work/keys-$1.db"
	fi
}
mainconfig() { # port prefix (181: ports 18100-18106), store line → the Caddyfile of every site but nousage
	cat <<CADDY
{
	admin off
	auto_https off
	nora {
		store $2
		instance bench sandbox "Bench"
	}
}
http://127.0.0.1:${1}01 {
	reverse_proxy 127.0.0.1:${1}00
}
http://127.0.0.1:${1}02 {
	nora_auth
	reverse_proxy 127.0.0.1:${1}00
}
http://127.0.0.1:${1}06 {
	nora_auth {
		require_scope bench:read
	}
	reverse_proxy 127.0.0.1:${1}00
}
http://127.0.0.1:${1}03 {
	forward_auth 127.0.0.1:${1}04 {
		uri /check
	}
	reverse_proxy 127.0.0.1:${1}00
}
http://127.0.0.1:${1}04 {
	respond 200
}
http://127.0.0.1:${1}00 {
	respond "ok"
}
http://127.0.0.1:${1}05 {
	nora_admin {
		token $token apiKey.create apiKey.read
	}
}
CADDY
}
mainconfig 181 "$(storeline main)" > "$work/Caddyfile"
# The twin: the same sites in a second process, for the paired rounds.
mainconfig 182 "$(storeline twin)" > "$work/Caddyfile-twin"
cat > "$work/Caddyfile-nousage" <<CADDY
{
	admin off
	auto_https off
	nora {
		store $(storeline nousage)
		instance bench sandbox "Bench"
		usage off
	}
}
http://127.0.0.1:18112 {
	nora_auth
	reverse_proxy 127.0.0.1:18110
}
http://127.0.0.1:18110 {
	respond "ok"
}
http://127.0.0.1:18115 {
	nora_admin {
		token $token apiKey.create apiKey.read
	}
}
CADDY
gw=() cl=()
if [ "${PIN:-0}" = 1 ]; then
	command -v taskset >/dev/null || { echo "PIN=1 needs taskset (util-linux)" >&2; exit 1; }
	gw=(env GOMAXPROCS=1 taskset -c 0) cl=(taskset -c 1)
fi
if [ "${STORE:-file}" = redis ]; then
	command -v redis-server >/dev/null || { echo "STORE=redis needs redis-server (apt-get install -y redis-server)" >&2; exit 1; }
	"${cl[@]}" redis-server --port 18190 --bind 127.0.0.1 --dir "$work" --save '' --appendonly no > "$work/redis.log" 2>&1 &
	echo $! > "$work/pid4"
	for _ in $(seq 50); do redis-cli -p 18190 ping > /dev/null 2>&1 && break; sleep 0.1; done
fi
"${gw[@]}" "$work/keygate" run --config "$work/Caddyfile" > "$work/log" 2>&1 &
echo $! > "$work/pid"
"${gw[@]}" "$work/keygate" run --config "$work/Caddyfile-nousage" > "$work/log2" 2>&1 &
echo $! > "$work/pid2"
"${gw[@]}" "$work/keygate" run --config "$work/Caddyfile-twin" > "$work/log3" 2>&1 &
echo $! > "$work/pid3"
for adm in 18105 18115 18205; do
	for _ in $(seq 100); do curl -s -o /dev/null 127.0.0.1:$adm/healthz && break; sleep 0.1; done
done
sleep 0.5
create() { # admin port, JSON body → the new key's "secret id"
	curl -s -X POST -H "Authorization: Bearer $token" -d "$2" 127.0.0.1:$1/v1/instances/bench/keys |
		sed -n 's/.*"id":"\([^"]*\)".*"secret":"\([^"]*\)".*/\2 \1/p'
}
read -r key keyid <<<"$(create 18105 '{"name":"bench"}')"
read -r nkey nkeyid <<<"$(create 18115 '{"name":"bench-nousage"}')"
# 1,000,000 per second and 10^12 in all: far above what wrk offers on any machine.
read -r lkey _ <<<"$(create 18105 '{"name":"bench-limited","rate_limit":{"limit":1000000,"window_seconds":1},"quota":{"limit":1000000000000,"period":"total"}}')"
full='{"name":"bench-full","scopes":["bench:*"],"allowed_ips":["127.0.0.0/8"],"metadata":{"team":"bench"},"rate_limit":{"limit":1000000,"window_seconds":1},"quota":{"limit":1000000000000,"period":"total"}}'
read -r fkey _ <<<"$(create 18105 "$full")"
read -r tkey _ <<<"$(create 18205 '{"name":"bench"}')"
read -r tfkey _ <<<"$(create 18205 "$full")"
[ -n "$key" ] && [ -n "$lkey" ] && [ -n "$nkey" ] && [ -n "$fkey" ] && [ -n "$tkey" ] && [ -n "$tfkey" ] || { echo "could not create the keys"; cat "$work/log" "$work/log2" "$work/log3"; exit 1; }
hdr=$(curl -sf -D - -o /dev/null -H "Authorization: Bearer $lkey" 127.0.0.1:18102/ | tr -d '\r' | grep -i '^ratelimit-limit:' || true)
[ -n "$hdr" ] || { echo "the limited key's answer carries no RateLimit-Limit"; exit 1; }
curl -sf -H "Authorization: Bearer $fkey" 127.0.0.1:18106/ > /dev/null || { echo "the every-feature key is refused on its route"; exit 1; }
curl -sf -H "Authorization: Bearer $key" 127.0.0.1:18102/ > /dev/null # warm the caches
curl -sf -H "Authorization: Bearer $nkey" 127.0.0.1:18112/ > /dev/null

cputicks() { # pid → user+system CPU time so far, in clock ticks
	awk '{print $14 + $15}' "/proc/$1/stat"
}
rps() { # port key pid → "requests/s CPU-µs-per-request" (the CPU time of the keygate process serving the site)
	local c0 c1 out
	c0=$(cputicks "$3")
	out=$("${cl[@]}" wrk -t1 -c"$conns" -d"${secs}s" -H "Authorization: Bearer $2" "http://127.0.0.1:$1/")
	c1=$(cputicks "$3")
	if grep -q 'Non-2xx' <<<"$out"; then echo "non-2xx answers on :$1: $out" >&2; exit 1; fi
	awk -v c="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" '/^ *[0-9]+ requests in/ {n=$1} /Requests\/sec/ {r=$2} END {printf "%s %.1f\n", r, c / hz * 1e6 / n}' <<<"$out"
}
echo "keygate gateway throughput, $(date -u +%FT%TZ), $(nproc) CPUs, ${STORE:-file} store, $rounds rounds of wrk -t1 -c$conns -d${secs}s per site, interleaved"
declare -A all cpu ratios cratios
sites="nora:18102:$key full:18106:$fkey limited:18102:$lkey nousage:18112:$nkey forward:18103:$key"
# Warm-up, not counted: every site once, briefly (connections, the caches, the heap's size).
for site in plain:18101:$key $sites; do
	IFS=: read -r n port k <<<"$site"
	"${cl[@]}" wrk -t1 -c"$conns" -d1s -H "Authorization: Bearer $k" "http://127.0.0.1:$port/" > /dev/null
done
measure() { # name port key → mv (requests/s) and mc (CPU µs per request), recorded under name
	local pid out
	pid=$(cat "$work/pid"); [ "$1" = nousage ] && pid=$(cat "$work/pid2")
	out=$(rps "$2" "$3" "$pid")
	read -r mv mc <<<"$out"
	all[$1]="${all[$1]:-} $mv"
	cpu[$1]="${cpu[$1]:-} $mc"
}
# Each round runs plain between every two other sites (plain nora plain full plain …), and
# compares each site with the mean of the plain runs just before and just after it: the
# machine's drift (other load, the hypervisor, CPU frequency) over those few seconds cancels
# out, and short rounds keep it small. The median of the rounds' ratios is the figure.
for r in $(seq "$rounds"); do
	measure plain 18101 "$key"
	pv=$mv pc=$mc
	line="round $r  plain $pv"
	for site in $sites; do
		IFS=: read -r n port k <<<"$site"
		measure "$n" "$port" "$k"
		v=$mv c=$mc
		measure plain 18101 "$key"
		pv2=$mv pc2=$mc
		ratios[$n]="${ratios[$n]:-} $(awk -v x="$v" -v a="$pv" -v b="$pv2" 'BEGIN {printf "%.4f", 2 * x / (a + b)}')"
		cratios[$n]="${cratios[$n]:-} $(awk -v x="$c" -v a="$pc" -v b="$pc2" 'BEGIN {printf "%.4f", (a + b) / 2 / x}')"
		line="$line  $n $v  plain $pv2"
		pv=$pv2 pc=$pc2
	done
	echo "$line req/s"
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
p=$(median "${all[plain]}"); n=$(median "${all[nora]}"); u=$(median "${all[nousage]}"); l=$(median "${all[limited]}"); a=$(median "${all[full]}"); f=$(median "${all[forward]}")
awk -v p="$p" -v n="$n" -v u="$u" -v l="$l" -v a="$a" -v f="$f" 'BEGIN {
	printf "median  plain %.0f  nora_auth %.0f  nora_auth(usage off) %.0f  nora_auth+limits %.0f  nora_auth+every feature %.0f  forward_auth %.0f req/s\n", p, n, u, l, a, f
}'
echo "cpu     µs per request, medians: plain $(median "${cpu[plain]}")  nora $(median "${cpu[nora]}")  nousage $(median "${cpu[nousage]}")  limited $(median "${cpu[limited]}")  full $(median "${cpu[full]}")  forward $(median "${cpu[forward]}")"
for n in nora full limited nousage forward; do
	case $n in
	nora) what="nora_auth/plain (target >= 0.97)" ;;
	full) what="every-feature/plain (target >= 0.95)" ;;
	limited) what="limited/plain" ;;
	nousage) what="usage-off/plain (another process)" ;;
	forward) what="forward_auth/plain (for scale)" ;;
	esac
	echo "rounds  $what per round:${ratios[$n]}   median $(median "${ratios[$n]}")"
	echo "cpu     $what, plain's CPU per request over its, per round:${cratios[$n]}   median $(median "${cratios[$n]}")"
done
# Paired rounds: the same sites in two identical processes (ports 181xx and 182xx, each with
# its own store and upstream, on the same CPU), driven at the same time: plain in one and
# nora_auth (or every feature) in the other, then the other way round. Both get whatever the
# machine (or the hypervisor) gives at that moment, shared evenly by the kernel, so the ratio
# of their request rates is what keygate costs, with the machine's drift taken out; swapping
# the processes takes out any difference between them. A round's ratio is the geometric mean
# of its two halves. PAIRS=0 skips them.
pairs=${PAIRS:-10}
both() { # portA keyA portB keyB → "requests/s of A, of B", measured at the same time
	local pa pb c0
	c0="$(cputicks "$(cat "$work/pid")") $(cputicks "$(cat "$work/pid3")")"
	"${cl[@]}" wrk -t1 -c"$conns" -d"${secs}s" -H "Authorization: Bearer $2" "http://127.0.0.1:$1/" > "$work/wa" &
	pa=$!
	"${cl[@]}" wrk -t1 -c"$conns" -d"${secs}s" -H "Authorization: Bearer $4" "http://127.0.0.1:$3/" > "$work/wb" &
	pb=$!
	wait "$pa" "$pb"
	for f in wa wb; do
		if grep -q 'Non-2xx' "$work/$f"; then echo "non-2xx answers: $(cat "$work/$f")" >&2; exit 1; fi
	done
	read -r c1 c3 <<<"$c0"
	# The processes' shares of the CPU time they used together (the kernel's fairness).
	share=$(awk -v a="$(( $(cputicks "$(cat "$work/pid")") - c1 ))" -v b="$(( $(cputicks "$(cat "$work/pid3")") - c3 ))" 'BEGIN {printf "%.3f %.3f", a / (a + b), b / (a + b)}')
	echo "$(awk '/Requests\/sec/ {print $2}' "$work/wa") $(awk '/Requests\/sec/ {print $2}' "$work/wb") $share"
}
[ "$pairs" -gt 0 ] && echo "paired rounds, $pairs of wrk -t1 -c$conns -d${secs}s on two processes at once"
for r in $(seq "$pairs"); do
	# forward_auth too: for scale, and to show that the pairing does tell costs apart.
	for feat in nora:02:$key:$tkey full:06:$fkey:$tfkey forward:03:$key:$tkey; do
		IFS=: read -r n port k1 k2 <<<"$feat"
		out=$(both 18101 "$key" "182$port" "$k2") # plain in the first process, the feature in the twin
		read -r p1 f1 sp1 sf1 <<<"$out"
		out=$(both "181$port" "$k1" 18201 "$tkey") # and the other way round
		read -r f2 p2 sf2 sp2 <<<"$out"
		# The rates' ratio, and the same per CPU second (each process' requests over its share
		# of the CPU time: the kernel's split, never quite even, taken out).
		read -r x y <<<"$(awk -v p1="$p1" -v f1="$f1" -v p2="$p2" -v f2="$f2" -v sp1="$sp1" -v sf1="$sf1" -v sp2="$sp2" -v sf2="$sf2" \
			'BEGIN {printf "%.4f %.4f", sqrt(f1 / p1 * f2 / p2), sqrt(f1 / sf1 / (p1 / sp1) * f2 / sf2 / (p2 / sp2))}')"
		echo "pair $r  plain $p1 / $n $f1 (CPU $sp1/$sf1), $n $f2 / plain $p2 (CPU $sf2/$sp2) req/s   $n/plain $x, per CPU second $y"
		case $n in
		nora) qnora="${qnora:-} $x" cnora2="${cnora2:-} $y" ;;
		full) qfull="${qfull:-} $x" cfull2="${cfull2:-} $y" ;;
		*) qfwd="${qfwd:-} $x" cfwd2="${cfwd2:-} $y" ;;
		esac
	done
done
if [ "$pairs" -gt 0 ]; then
	echo "paired  nora_auth/plain per round:$qnora   median $(median "$qnora") (target >= 0.97)"
	echo "paired  every-feature/plain per round:$qfull   median $(median "$qfull") (target >= 0.95)"
	echo "paired  forward_auth/plain per round:$qfwd   median $(median "$qfwd") (for scale)"
	echo "per CPU second  nora_auth/plain per round:$cnora2   median $(median "$cnora2") (target >= 0.97)"
	echo "per CPU second  every-feature/plain per round:$cfull2   median $(median "$cfull2") (target >= 0.95)"
	echo "per CPU second  forward_auth/plain per round:$cfwd2   median $(median "$cfwd2") (for scale)"
fi
# What each process counted for its key over the last hour (the flush interval is 5 s).
sleep 6
okcount() { # admin port, key id → the usage total's ok
	curl -s -H "Authorization: Bearer $token" "127.0.0.1:$1/v1/instances/bench/keys/$2/usage?granularity=minute" |
		sed -n 's/.*"total":{"ok":\([0-9]*\).*/\1/p'
}
on=$(okcount 18105 "$keyid"); off=$(okcount 18115 "$nkeyid")
echo "counted  usage on: $on requests of the nora key   usage off: ${off:-?} requests of the nousage key"
[ "${on:-0}" -gt 0 ] && [ "$off" = 0 ] || { echo "usage counts are not what the sites say (on $on, off $off)" >&2; exit 1; }
