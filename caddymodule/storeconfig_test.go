package caddymodule_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/store/redisstore"
)

// The `store redis` block: every word adapts, every string field takes {env.*}
// placeholders, resolved when the config loads (the adapted JSON holds the placeholder, not
// the secret), and the resolved values reach Redis: the address, the ACL user and password,
// the database, the key prefix, and Sentinel's master name and password.

// storeJSON adapts a Caddyfile and returns the nora app's store object.
func storeJSON(t *testing.T, caddyfile string) map[string]any {
	t.Helper()
	cfg, err := adapt(caddyfile)
	if err != nil {
		t.Fatalf("adapting: %v", err)
	}
	var c struct {
		Apps struct {
			Nora struct {
				Store map[string]any `json:"store"`
			} `json:"nora"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfg, &c); err != nil {
		t.Fatal(err)
	}
	return c.Apps.Nora.Store
}

func TestStoreRedisBlockAdaptsEveryWord(t *testing.T) {
	got := storeJSON(t, `{
	nora {
		store redis {
			addrs {env.A1} {env.A2}
			addrs {env.A3}
			master_name {env.MASTER}
			cluster
			username {env.USER}
			password {env.PASS}
			sentinel_password {env.SPASS}
			db {env.DB}
			tls
			key_prefix {env.PREFIX}
			wait_replicas 2
			timeout 250ms
		}
	}
}
`)
	want := map[string]any{
		"type": "redis", "addrs": []any{"{env.A1}", "{env.A2}", "{env.A3}"}, "master_name": "{env.MASTER}",
		"cluster": true, "username": "{env.USER}", "password": "{env.PASS}", "sentinel_password": "{env.SPASS}",
		"db": "{env.DB}", "tls": true, "key_prefix": "{env.PREFIX}", "wait_replicas": "2",
		"timeout": "250ms",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("adapted store\n got %v\nwant %v", got, want)
	}
	// The URL form takes a placeholder too.
	if got := storeJSON(t, "{\n\tnora {\n\t\tstore redis {env.URL}\n\t}\n}\n"); got["url"] != "{env.URL}" {
		t.Errorf("store redis {env.URL} adapted to %v", got)
	}
}

// gatewayWorks starts the gateway config on the store block, mints a key through the app's
// store and sees it accepted through HTTP. It returns the store.
func gatewayWorks(t *testing.T, storeBlock string) *redisstore.Store {
	t.Helper()
	up := newUpstream(t)
	port := redistest.FreePort(t)
	load(t, gatewayConfig(t, storeBlock, up.URL, port, ""))
	s, ok := noraApp(t).KeyStore().(*redisstore.Store)
	if !ok {
		t.Fatalf("store is %T, want the Redis store", noraApp(t).KeyStore())
	}
	waitInstances(t, s, 2)
	secret, _ := mint(t, s, "acme-prod", apikey.Production, time.Time{})
	if a := call(t, fmt.Sprintf("http://127.0.0.1:%d/any/x", port), "Bearer "+secret); a.status != 200 {
		t.Fatalf("a fresh key through the gateway: %d %s", a.status, a.body)
	}
	return s
}

// Standalone: addrs, username, password, db and key_prefix from the environment, against a
// Redis whose default user has another password and where the ACL user is the only way in.
func TestStoreRedisEnvStandalone(t *testing.T) {
	const adminPass, userPass = "admin-secret-1", "keygate-secret-2"
	srv := redistest.Start(t, "--requirepass", adminPass,
		"--user", "keygate", "on", ">"+userPass, "~*", "&*", "+@all")
	admin := func(db int) *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr, Password: adminPass, DB: db})
		t.Cleanup(func() { c.Close() })
		return c
	}
	ctx := context.Background()

	t.Run("block", func(t *testing.T) {
		t.Setenv("KG_TEST_ADDR", srv.Addr)
		t.Setenv("KG_TEST_USER", "keygate")
		t.Setenv("KG_TEST_PASS", userPass)
		t.Setenv("KG_TEST_DB", "5")
		t.Setenv("KG_TEST_PREFIX", "kgenv:")
		block := `store redis {
			addrs {env.KG_TEST_ADDR}
			username {env.KG_TEST_USER}
			password {env.KG_TEST_PASS}
			db {env.KG_TEST_DB}
			key_prefix {env.KG_TEST_PREFIX}
			wait_replicas {env.KG_TEST_WAIT}
			timeout {env.KG_TEST_TIMEOUT}
		}`
		t.Setenv("KG_TEST_WAIT", "0")
		t.Setenv("KG_TEST_TIMEOUT", "750ms")
		cfg, err := adapt(gatewayConfig(t, block, "http://127.0.0.1:1", 1, ""))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(cfg), userPass) || strings.Contains(string(cfg), srv.Addr) {
			t.Fatal("the adapted config holds resolved values: placeholders must stay until load")
		}
		s := gatewayWorks(t, block)
		if got := s.Client().(*redis.Client).Options().ReadTimeout; got != 750*time.Millisecond {
			t.Errorf("timeout {env.KG_TEST_TIMEOUT}: the client's read timeout is %v, want 750ms", got)
		}

		// The data is in database 5 under the prefix, and nowhere else.
		if n, err := admin(5).Exists(ctx, "kgenv:instances").Result(); err != nil || n != 1 {
			t.Errorf("kgenv:instances in db 5: %d, %v", n, err)
		}
		if keys, err := admin(5).Keys(ctx, "*").Result(); err != nil || len(keys) == 0 {
			t.Errorf("db 5 keys: %v, %v", keys, err)
		} else {
			for _, k := range keys {
				if !strings.HasPrefix(k, "kgenv:") {
					t.Errorf("key %q in db 5 lacks the prefix", k)
				}
			}
		}
		if n, err := admin(0).DBSize(ctx).Result(); err != nil || n != 0 {
			t.Errorf("db 0 holds %d keys (%v), want none", n, err)
		}
		// The gateway is connected as the ACL user.
		clients, err := admin(0).ClientList(ctx).Result()
		if err != nil || !strings.Contains(clients, " user=keygate ") {
			t.Errorf("no connection as user keygate: %v\n%s", err, clients)
		}
	})

	t.Run("url", func(t *testing.T) {
		t.Setenv("KG_TEST_URL", fmt.Sprintf("redis://keygate:%s@%s/7", userPass, srv.Addr))
		gatewayWorks(t, "store redis {env.KG_TEST_URL}")
		if n, err := admin(7).Exists(ctx, "nora:instances").Result(); err != nil || n != 1 {
			t.Errorf("nora:instances in db 7: %d, %v", n, err)
		}
	})

	t.Run("wrong password refused", func(t *testing.T) {
		t.Setenv("KG_TEST_ADDR", srv.Addr)
		t.Setenv("KG_TEST_PASS", "not-the-password")
		up := newUpstream(t)
		port := redistest.FreePort(t)
		load(t, gatewayConfig(t, "store redis {\n\t\t\taddrs {env.KG_TEST_ADDR}\n\t\t\tusername keygate\n\t\t\tpassword {env.KG_TEST_PASS}\n\t\t\ttimeout 200ms\n\t\t}", up.URL, port, ""))
		key, _ := apikey.Generate(apikey.Sandbox)
		if a := call(t, fmt.Sprintf("http://127.0.0.1:%d/any/x", port), "Bearer "+key); a.status != 503 {
			t.Errorf("with a wrong password: %d %s, want 503", a.status, a.body)
		}
	})
}

// Sentinel: the sentinels' address, master_name, the sentinels' own password, the data
// nodes' password and db from the environment.
func TestStoreRedisEnvSentinel(t *testing.T) {
	const pass, spass = "data-secret-3", "sentinel-secret-4"
	sn := redistest.StartSentinelWith(t, redistest.SentinelOptions{Password: pass, SentinelPassword: spass})
	t.Setenv("KG_TEST_SENTINEL", sn.Addr)
	t.Setenv("KG_TEST_MASTER", redistest.MasterName)
	t.Setenv("KG_TEST_SPASS", spass)
	t.Setenv("KG_TEST_PASS", pass)
	t.Setenv("KG_TEST_DB", "3")
	t.Setenv("KG_TEST_PREFIX", "kgsent:")
	gatewayWorks(t, `store redis {
			addrs {env.KG_TEST_SENTINEL}
			master_name {env.KG_TEST_MASTER}
			sentinel_password {env.KG_TEST_SPASS}
			password {env.KG_TEST_PASS}
			db {env.KG_TEST_DB}
			key_prefix {env.KG_TEST_PREFIX}
		}`)
	c := redis.NewClient(&redis.Options{Addr: sn.Master.Addr, Password: pass, DB: 3})
	defer c.Close()
	if n, err := c.Exists(context.Background(), "kgsent:instances").Result(); err != nil || n != 1 {
		t.Errorf("kgsent:instances in the master's db 3: %d, %v", n, err)
	}
}

// Cluster: several addrs mean Cluster; one addr with `cluster` too; db is refused, and so is
// a key prefix that would spread an instance over the slots.
func TestStoreRedisEnvCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	t.Setenv("KG_TEST_N1", c.Masters[0].Addr)
	t.Setenv("KG_TEST_N2", c.Masters[1].Addr)
	t.Setenv("KG_TEST_N3", c.Masters[2].Addr)
	t.Setenv("KG_TEST_PREFIX", "kgclu:")
	for _, tc := range []struct{ name, block string }{
		{"several addrs", "store redis {\n\t\t\taddrs {env.KG_TEST_N1} {env.KG_TEST_N2}\n\t\t\tkey_prefix {env.KG_TEST_PREFIX}\n\t\t}"},
		{"cluster word", "store redis {\n\t\t\taddrs {env.KG_TEST_N3}\n\t\t\tcluster\n\t\t\tkey_prefix {env.KG_TEST_PREFIX}\n\t\t}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := gatewayWorks(t, tc.block)
			if _, ok := s.Client().(*redis.ClusterClient); !ok {
				t.Errorf("client is %T, want a cluster client", s.Client())
			}
		})
	}
	cc := c.Client()
	if n, err := cc.Exists(context.Background(), "kgclu:instances").Result(); err != nil || n != 1 {
		t.Errorf("kgclu:instances in the cluster: %d, %v", n, err)
	}

	for _, tc := range []struct{ name, block, want string }{
		{"db", "store redis {\n\t\t\taddrs {env.KG_TEST_N1} {env.KG_TEST_N2}\n\t\t\tdb 1\n\t\t}", "no databases"},
		{"empty hash tag", "store redis {\n\t\t\taddrs {env.KG_TEST_N1}\n\t\t\tcluster\n\t\t\tkey_prefix x{}\n\t\t}", "hash tag"},
	} {
		t.Run("refused "+tc.name, func(t *testing.T) {
			cfg, err := adapt(gatewayConfig(t, tc.block, "http://127.0.0.1:1", redistest.FreePort(t), ""))
			if err != nil {
				t.Fatal(err)
			}
			err = caddy.Load(cfg, true)
			if err == nil {
				caddy.Stop()
				t.Fatal("config loaded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

// The numbers of the store block (db, wait_replicas, timeout) take {env.*}: a bad literal is
// refused when the Caddyfile is adapted, naming the line; a bad resolved value when the
// config loads, naming the word.
func TestStoreRedisNumbersRefused(t *testing.T) {
	for _, tc := range []struct{ word, value string }{
		{"db", "-1"}, {"db", "five"}, {"wait_replicas", "-2"}, {"wait_replicas", "1.5"},
		{"timeout", "0s"}, {"timeout", "soon"}, {"timeout", "-1s"},
	} {
		t.Run(tc.word+" "+tc.value, func(t *testing.T) {
			block := fmt.Sprintf("store redis {\n\t\t\taddrs 127.0.0.1:1\n\t\t\t%s %s\n\t\t}", tc.word, tc.value)
			_, err := adapt(gatewayConfig(t, block, "http://127.0.0.1:1", redistest.FreePort(t), ""))
			if err == nil || !strings.Contains(err.Error(), tc.word) || !strings.Contains(err.Error(), "Caddyfile:") {
				t.Fatalf("adapting %s %s: %v, want an error naming the word and the line", tc.word, tc.value, err)
			}

			t.Setenv("KG_TEST_NUMBER", tc.value)
			block = fmt.Sprintf("store redis {\n\t\t\taddrs 127.0.0.1:1\n\t\t\t%s {env.KG_TEST_NUMBER}\n\t\t}", tc.word)
			cfg, err := adapt(gatewayConfig(t, block, "http://127.0.0.1:1", redistest.FreePort(t), ""))
			if err != nil {
				t.Fatalf("adapting the placeholder: %v", err)
			}
			err = caddy.Load(cfg, true)
			if err == nil {
				caddy.Stop()
				t.Fatal("config loaded")
			}
			if !strings.Contains(err.Error(), tc.word) {
				t.Errorf("loading: %v, want an error naming %s", err, tc.word)
			}
		})
	}
}
