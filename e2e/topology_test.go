package e2e

// Gateway processes on Redis Cluster, through Sentinel (across a failover) and over TLS
// (the Redis store works unchanged on standalone, Sentinel and Cluster).

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/redisstore"
)

// topoGateways starts one gateway process per store block (each inside `nora { ... }`),
// all proxying to one upstream, and returns them once s (the test's own store on the same
// Redis) sees the instances they create.
func topoGateways(t *testing.T, s store.Store, blocks []string, env ...string) []*gateway {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(up.Close)
	var gws []*gateway
	for _, block := range blocks {
		port := freePort(t)
		cf := fmt.Sprintf(`{
	admin off
	auto_https off
	nora {
		%s
		instance acme-sandbox sandbox "Acme (sandbox)"
		instance acme-prod production "Acme (production)"
	}
}
http://127.0.0.1:%d {
	nora_auth
	reverse_proxy %s
}
`, block, port, up.URL)
		gws = append(gws, startGateway(t, cf, port, env...))
	}
	testutil.WaitFor(t, 10*time.Second, "the gateways to create their instances", func() bool {
		ins, _ := s.Instances(context.Background())
		return len(ins) == 2
	})
	return gws
}

// topoMint creates a key through s, retrying for up to timeout (a store that is switching
// masters may refuse for a moment).
func topoMint(t *testing.T, s store.Store, timeout time.Duration) (string, store.Key) {
	t.Helper()
	secret, k, err := store.Mint(apikey.Hasher{}, store.Instance{ID: "acme-prod", Environment: apikey.Production}, "topology", time.Time{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err != nil { // the wait below timed out
			t.Logf("last CreateKey: %v", err)
		}
	}()
	testutil.WaitEvery(t, timeout, 50*time.Millisecond, "CreateKey to succeed", func() bool {
		err = s.CreateKey(context.Background(), k)
		return err == nil
	})
	return secret, k
}

// waitAccepted waits until every gateway accepts key (a gateway reconnecting may answer 503
// meanwhile; any other refusal fails).
func waitAccepted(t *testing.T, gws []*gateway, key string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for i, g := range gws {
		testutil.WaitEvery(t, time.Until(deadline), 20*time.Millisecond, fmt.Sprintf("gateway %d to accept a valid key (it answers 503)", i), func() bool {
			r := get(t, g.url+"/v1/charges", key)
			if r.status != 200 && r.status != 503 {
				t.Fatalf("gateway %d refuses a valid key: %d %s", i, r.status, r.body)
			}
			return r.status == 200
		})
	}
}

// revokeAndWatch revokes k through s and checks that every gateway refuses it with
// api_key_revoked within 1 s of the call being made.
func revokeAndWatch(t *testing.T, s store.Store, gws []*gateway, secret string, k store.Key) {
	t.Helper()
	made := time.Now()
	if _, _, err := s.RevokeKey(context.Background(), k.Instance, k.ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	returned := time.Since(made)
	for i, g := range gws {
		testutil.WaitEvery(t, time.Second-time.Since(made), time.Millisecond, fmt.Sprintf("the revocation to reach gateway %d (1 s after the call at most)", i), func() bool {
			r := get(t, g.url+"/v1/charges", secret)
			if r.status == 401 && r.Error.Code == "api_key_revoked" {
				return true
			}
			if r.status != 200 {
				t.Fatalf("gateway %d: unexpected answer %d %s", i, r.status, r.body)
			}
			return false
		})
	}
	t.Logf("revoke returned after %v; every gateway refused the key %v after it was made", returned, time.Since(made))
}

// waitOnServer waits until rdb's connections go to the server listening on port.
func waitOnServer(t *testing.T, rdb redis.UniversalClient, port int, timeout time.Duration) {
	t.Helper()
	var v map[string]string
	var err error
	waiting := true
	defer func() {
		if waiting {
			t.Logf("the client still talks to port %v (%v)", v, err)
		}
	}()
	testutil.WaitEvery(t, timeout, 5*time.Millisecond, fmt.Sprintf("the client to talk to port %d", port), func() bool {
		v, err = rdb.ConfigGet(context.Background(), "port").Result()
		return err == nil && v["port"] == strconv.Itoa(port)
	})
	waiting = false
}

// hmgets is how many HMGETs (lookups) the servers ran in all.
func hmgets(srvs []*redistest.Server) int64 {
	var n int64
	for _, s := range srvs {
		n += s.CommandCalls("hmget")
	}
	return n
}

// Two gateways on one Redis Cluster, their clients seeded with different nodes: a key
// created through a cluster client works on both, is served from their caches, and its
// revocation reaches both within 1 s, wherever the lookup entry and the stream live.
func TestClusterGatewaysOnDifferentSeedNodes(t *testing.T) {
	c := redistest.StartCluster(t)
	s := redisstore.New(redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()}), redisstore.Options{})
	t.Cleanup(func() { s.Close() })
	gws := topoGateways(t, s, []string{
		fmt.Sprintf("store redis {\n\t\t\taddrs %s\n\t\t\tcluster\n\t\t}", c.Masters[0].Addr),
		fmt.Sprintf("store redis {\n\t\t\taddrs %s\n\t\t\tcluster\n\t\t}", c.Masters[2].Addr),
	})

	for round := 0; round < 3; round++ {
		secret, k := topoMint(t, s, 0)
		t.Logf("lookup entry on %s, listed record on %s, stream on %s",
			c.MasterFor("nora:h:"+fmt.Sprintf("%x", k.Hash[:])).Addr, c.MasterFor("nora:{i:acme-prod}").Addr, c.MasterFor("nora:inval").Addr)
		waitAccepted(t, gws, secret, 0)
		before := hmgets(c.Masters)
		waitAccepted(t, gws, secret, 0)
		if got := hmgets(c.Masters) - before; got != 0 {
			t.Fatalf("cached keys cost %d store lookups", got)
		}
		revokeAndWatch(t, s, gws, secret, k)
	}
}

// Two gateways through Sentinel: a key works on both; after SENTINEL FAILOVER they follow
// the new master (a key created after it works on both, an old one still does), and a
// revocation made after the failover reaches both within 1 s.
func TestSentinelGatewaysFollowFailover(t *testing.T) {
	sn := redistest.StartSentinel(t)
	s := redisstore.New(redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName: redistest.MasterName, SentinelAddrs: []string{sn.Addr},
	}), redisstore.Options{})
	t.Cleanup(func() { s.Close() })
	block := fmt.Sprintf("store redis {\n\t\t\taddrs %s\n\t\t\tmaster_name %s\n\t\t}", sn.Addr, redistest.MasterName)
	gws := topoGateways(t, s, []string{block, block})

	before, bk := topoMint(t, s, 0)
	waitAccepted(t, gws, before, 0)
	old := sn.Master.Addr

	start := time.Now()
	sn.Failover()
	t.Logf("failover from %s to %s took %v", old, sn.Master.Addr, time.Since(start))
	// Clients learn of the switch from the sentinel's +switch-master message, tens of
	// milliseconds later; until then they still write to the old master, which stays a
	// writable master until the sentinel converts it (what they write there is lost then:
	// wait_replicas 1 turns those writes into errors). So the test's own client is waited
	// for, and the gateways, told by the same message, get a moment more.
	waitOnServer(t, s.Client(), sn.Master.Port, 5*time.Second)
	time.Sleep(200 * time.Millisecond)

	after, ak := topoMint(t, s, 5*time.Second)
	waitAccepted(t, gws, after, 5*time.Second)
	waitAccepted(t, gws, before, 5*time.Second)
	t.Logf("both gateways accept a key created after the failover %v after it began", time.Since(start))
	// Their invalidation listeners follow the new master too: the caches are trusted again
	// (a request costs no lookup), so the revocations below travel by the stream.
	testutil.WaitEvery(t, 5*time.Second, 20*time.Millisecond, "the gateways to trust their caches again after the failover", func() bool {
		before := hmgets([]*redistest.Server{sn.Master, sn.Replica})
		waitAccepted(t, gws, after, 0)
		return hmgets([]*redistest.Server{sn.Master, sn.Replica}) == before
	})
	for _, srv := range []struct {
		addr string
		want int64
	}{{sn.Master.Addr, 1}, {old, 0}} {
		c := redis.NewClient(&redis.Options{Addr: srv.addr})
		if n, err := c.Exists(context.Background(), fmt.Sprintf("nora:h:%x", ak.Hash[:])).Result(); err != nil || n != srv.want {
			t.Errorf("the key created after the failover: %d on %s (%v), want %d", n, srv.addr, err, srv.want)
		}
		c.Close()
	}

	revokeAndWatch(t, s, gws, after, ak)
	revokeAndWatch(t, s, gws, before, bk)
}

// `tls`: a gateway reaches a Redis that speaks only TLS on its port, verifying the server's
// certificate against the CA it is given (SSL_CERT_FILE).
func TestStoreOverTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := writeTestPKI(t, dir)
	tlsPort := freePort(t)
	srv := redistest.Start(t, "--tls-port", strconv.Itoa(tlsPort), "--tls-cert-file", cert,
		"--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "no")
	// The test's store uses the plain port of the same server.
	s := redisstore.New(redis.NewClient(&redis.Options{Addr: srv.Addr}), redisstore.Options{})
	t.Cleanup(func() { s.Close() })
	gws := topoGateways(t, s, []string{
		fmt.Sprintf("store redis {\n\t\t\taddrs 127.0.0.1:%d\n\t\t\ttls\n\t\t}", tlsPort),
	}, "SSL_CERT_FILE="+ca)
	secret, k := topoMint(t, s, 0)
	waitAccepted(t, gws, secret, 0)
	revokeAndWatch(t, s, gws, secret, k)
}

// writeTestPKI writes a CA and a server certificate for 127.0.0.1 signed by it, and returns
// the files: CA certificate, server certificate, server key.
func writeTestPKI(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "keygate test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey := newKey()
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", srvDER), write("server.key", "EC PRIVATE KEY", keyDER)
}
