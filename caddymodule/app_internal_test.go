package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Numbers resolve from {env.*}; JSON configs written before they were strings (a JSON number)
// still load.
func TestStoreNumbersResolve(t *testing.T) {
	t.Setenv("KG_TEST_DB", "4")
	t.Setenv("KG_TEST_WAIT", "2")
	t.Setenv("KG_TEST_TIMEOUT", "1500ms")
	c := StoreConfig{Type: "redis", Addrs: []string{"127.0.0.1:1"}, DB: "{env.KG_TEST_DB}",
		WaitReplicas: "{env.KG_TEST_WAIT}", Timeout: "{env.KG_TEST_TIMEOUT}"}
	st, err := c.resolve(caddy.NewReplacer())
	if err != nil {
		t.Fatal(err)
	}
	if st.Redis.DB != 4 || st.WaitReplicas != 2 || st.Redis.Timeout != 1500*time.Millisecond {
		t.Fatalf("resolved db %d, wait_replicas %d, timeout %v", st.Redis.DB, st.WaitReplicas, st.Redis.Timeout)
	}

	var old StoreConfig
	if err := json.Unmarshal([]byte(`{"type":"redis","addrs":["a:1"],"db":3,"wait_replicas":1,"timeout":250000000}`), &old); err != nil {
		t.Fatal(err)
	}
	st, err = old.resolve(caddy.NewReplacer())
	if err != nil {
		t.Fatal(err)
	}
	if st.Redis.DB != 3 || st.WaitReplicas != 1 || st.Redis.Timeout != 250*time.Millisecond {
		t.Fatalf("from JSON numbers: db %d, wait_replicas %d, timeout %v", st.Redis.DB, st.WaitReplicas, st.Redis.Timeout)
	}
	if err := json.Unmarshal([]byte(`{"db":[1]}`), &old); err == nil {
		t.Fatal("db [1] unmarshalled")
	}
}

// The pool keys of the shared store and verifier hold no secret in clear.
func TestPoolKeysHoldNoSecret(t *testing.T) {
	const pass, pepper = "redis-password-secret", "pepper-secret-value"
	a := &App{Store: &StoreConfig{Type: "redis", Addrs: []string{"127.0.0.1:1"}, Password: pass}, Pepper: pepper}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	if err := a.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Cleanup()
	for _, k := range []string{a.storeKey, a.verKey} {
		if strings.Contains(k, pass) || strings.Contains(k, pepper) || strings.Contains(k, "127.0.0.1") {
			t.Errorf("pool key %q holds config in clear", k)
		}
	}
}
