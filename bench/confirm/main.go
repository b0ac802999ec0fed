// Command confirm measures a confirmed revocation: how long a revoke through the admin API
// takes to answer when it waits for every live gateway to acknowledge it (target: p99 ≤ 20 ms
// with 3 gateway processes on one Redis, on one machine).
//
// It starts its own redis-server on a free port (in a temporary directory, never the
// machine's own Redis) and 3 keygate gateway processes on it, each with a nora_admin site;
// creates K keys through a redisstore client; then revokes them one by one with
// DELETE /v1/instances/{instance}/keys/{id} on the first gateway's admin endpoint (a keep-alive
// connection), timing each call from its send to its answer, and checks that the answer's
// propagation says every gateway confirmed.
//
//	go run ./bench/confirm [-keygate path] [-keys 500] [-gateways 3] [-out file]
//
// Without -keygate it builds ./cmd/keygate into a temporary directory with `go build`.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/bench/internal/harness"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/redisstore"
)

const token = "bench-confirm-admin-token"

func main() {
	root := harness.ModuleRoot()
	var (
		bin      = flag.String("keygate", "", "keygate binary (default: go build ./cmd/keygate into a temporary directory)")
		nkeys    = flag.Int("keys", 500, "keys to create and revoke")
		ngw      = flag.Int("gateways", 3, "gateway processes")
		out      = flag.String("out", filepath.Join(root, "bench", "results", "confirm.txt"), "results file (\"\": none)")
		redisBin = flag.String("redis-server", "redis-server", "redis-server binary")
	)
	flag.Parse()
	harness.Main("confirm", func(r *harness.Run) error { return run(r, root, *bin, *redisBin, *nkeys, *ngw, *out) })
}

func run(r *harness.Run, root, bin, redisBin string, nkeys, ngw int, outFile string) error {
	if nkeys < 1 || ngw < 1 {
		return errors.New("-keys and -gateways must be at least 1")
	}
	if err := harness.CheckRedisServer(redisBin); err != nil {
		return err
	}
	work, err := r.TempDir("keygate-confirm")
	if err != nil {
		return err
	}
	if bin, err = harness.Keygate(root, bin, work); err != nil {
		return err
	}
	rd, err := r.StartRedis(redisBin, filepath.Join(work, "redis"))
	if err != nil {
		return err
	}
	defer rd.Client.Close()
	raddr, redisVersion := rd.Addr, rd.Version
	ctx := context.Background()

	var admins []string
	var gws []*harness.Proc
	for i := 0; i < ngw; i++ {
		port, err := harness.FreePort()
		if err != nil {
			return err
		}
		aport, err := harness.FreePort()
		if err != nil {
			return err
		}
		cf := fmt.Sprintf(`{
	admin off
	auto_https off
	nora {
		store redis redis://%s/0
		instance acme-sandbox sandbox "Acme (sandbox)"
	}
}
http://127.0.0.1:%d {
	nora_auth
	respond "ok"
}
http://127.0.0.1:%d {
	nora_admin {
		token %s apiKey.read apiKey.create apiKey.delete
	}
}
`, raddr, port, aport, token)
		gw, err := r.StartGateway(bin, filepath.Join(work, fmt.Sprintf("gw%d", i)), cf, aport, fmt.Sprintf("gateway %d", i))
		if err != nil {
			return err
		}
		admins = append(admins, fmt.Sprintf("http://127.0.0.1:%d", aport))
		gws = append(gws, gw)
	}

	st := redisstore.New(redis.NewClient(&redis.Options{Addr: raddr}), redisstore.Options{})
	r.OnCleanup(func() { st.Close() })
	hc := &http.Client{Timeout: 10 * time.Second}
	call := func(method, url string, out any) (int, error) {
		req, _ := http.NewRequest(method, url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && out != nil {
			err = json.Unmarshal(b, out)
		}
		return resp.StatusCode, err
	}
	// Every gateway listed (heartbeats) and its instance created.
	deadline := time.Now().Add(15 * time.Second)
	for {
		var l struct {
			Data []json.RawMessage `json:"data"`
		}
		_, err := call("GET", admins[0]+"/v1/gateways", &l)
		ins, _ := st.Instances(ctx)
		if err == nil && len(l.Data) == ngw && len(ins) == 1 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the %d gateways did not all register (%d listed)", ngw, len(l.Data))
		}
		time.Sleep(50 * time.Millisecond)
	}
	const frozenRevokes = 5
	keys := make([]store.Key, nkeys+frozenRevokes)
	in := store.Instance{ID: "acme-sandbox", Environment: apikey.Sandbox}
	for i := range keys {
		_, k, err := store.Mint(apikey.Hasher{}, in, "bench", time.Time{}, time.Now())
		if err != nil {
			return err
		}
		if err := st.CreateKey(ctx, k); err != nil {
			return err
		}
		keys[i] = k
	}
	fmt.Printf("revoking %d keys through the admin API of gateway 0 …\n", nkeys)
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
	type propagation struct {
		Gateways  int     `json:"gateways"`
		Confirmed int     `json:"confirmed"`
		ElapsedMS float64 `json:"elapsed_ms"`
	}
	revoke := func(k store.Key) (propagation, time.Duration, error) {
		var out struct {
			Propagation *propagation `json:"propagation"`
		}
		start := time.Now()
		status, err := call("DELETE", admins[0]+"/v1/instances/acme-sandbox/keys/"+k.ID, &out)
		d := time.Since(start)
		if err != nil || status != 200 || out.Propagation == nil {
			return propagation{}, d, fmt.Errorf("revoke %s: %d %v", k.ID, status, err)
		}
		return *out.Propagation, d, nil
	}
	var took, confirm []time.Duration
	short := 0
	for _, k := range keys[:nkeys] {
		p, d, err := revoke(k)
		if err != nil {
			return err
		}
		if p.Confirmed != p.Gateways || p.Gateways != ngw {
			short++
		}
		took = append(took, d)
		confirm = append(confirm, time.Duration(p.ElapsedMS*float64(time.Millisecond)))
	}
	// The last gateway frozen (SIGSTOP, its heartbeat still fresh): each revoke waits out the
	// one-second bound and reports it missing.
	var frozen []string
	if ngw > 1 {
		last := gws[len(gws)-1].Cmd
		last.Process.Signal(syscall.SIGSTOP)
		for _, k := range keys[nkeys:] {
			p, d, err := revoke(k)
			if err != nil {
				last.Process.Signal(syscall.SIGCONT)
				return err
			}
			frozen = append(frozen, fmt.Sprintf("%s (%d of %d)", ms(d), p.Confirmed, p.Gateways))
		}
		last.Process.Signal(syscall.SIGCONT)
	}
	pct := harness.Percentile
	var b strings.Builder
	fmt.Fprintf(&b, "confirmed revocation: DELETE …/keys/{id} through the admin API, %d gateway processes on one Redis\n", ngw)
	fmt.Fprintf(&b, "date:     %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "machine:  %s, %d CPUs (%s), %s/%s, redis %s\n", harness.CPUModel(), harness.NProc(), runtime.Version(), runtime.GOOS, runtime.GOARCH, redisVersion)
	fmt.Fprintf(&b, "command:  %s\n", harness.CommandLine("./bench/confirm"))
	fmt.Fprintf(&b, "revokes:  %d, one at a time; not confirmed by every gateway: %d\n", nkeys, short)
	fmt.Fprintf(&b, "answer time (send to answer, the client's view):   p50 %s  p90 %s  p99 %s  max %s\n",
		ms(pct(took, .5)), ms(pct(took, .9)), ms(pct(took, .99)), ms(pct(took, 1)))
	fmt.Fprintf(&b, "confirmation wait (propagation.elapsed_ms):        p50 %s  p90 %s  p99 %s  max %s\n",
		ms(pct(confirm, .5)), ms(pct(confirm, .9)), ms(pct(confirm, .99)), ms(pct(confirm, 1)))
	if len(frozen) > 0 {
		fmt.Fprintf(&b, "one gateway frozen (SIGSTOP), %d revokes: %s\n", len(frozen), strings.Join(frozen, ", "))
	}
	verdict := "met"
	if pct(took, .99) > 20*time.Millisecond || short > 0 {
		verdict = "NOT met"
	}
	fmt.Fprintf(&b, "target:   p99 answer ≤ 20 ms, every revoke confirmed by all %d: %s\n", ngw, verdict)
	fmt.Print(b.String())
	if outFile != "" {
		return os.WriteFile(outFile, []byte(b.String()), 0o644)
	}
	return nil
}
