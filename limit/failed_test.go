package limit

import (
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newLimiter(t testing.TB, cfg Config) (*FailedAttempts, *clock) {
	t.Helper()
	clk := &clock{t: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	cfg.Now = clk.Now
	f, err := NewFailedAttempts(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f, clk
}

var addr = netip.MustParseAddr("203.0.113.7")

func TestBlockedAfterLimitUntilTheWindowPasses(t *testing.T) {
	f, clk := newLimiter(t, Config{Limit: 5, Window: time.Minute})
	for i := range 5 {
		if _, b := f.Blocked(addr); b {
			t.Fatalf("blocked after %d failures", i)
		}
		f.Fail(addr)
		clk.Add(time.Second)
	}
	// 5 failures, the first 5 s ago: blocked until it is a window old (and at most a part more).
	ra, b := f.Blocked(addr)
	if !b {
		t.Fatal("not blocked after 5 failures")
	}
	if ra < 55*time.Second || ra > 55*time.Second+time.Minute/subWindows {
		t.Fatalf("retry after %v, want about 55s", ra)
	}
	// Another address is not blocked.
	if _, b := f.Blocked(netip.MustParseAddr("203.0.113.8")); b {
		t.Fatal("another address is blocked")
	}
	// Just before the first failure is a window old, still blocked; after the retry, free.
	clk.Add(54 * time.Second)
	if _, b := f.Blocked(addr); !b {
		t.Fatal("free before the window passed")
	}
	clk.Add(ra - 54*time.Second)
	if ra2, b := f.Blocked(addr); b {
		t.Fatalf("still blocked after Retry-After (%v more)", ra2)
	}
	// The oldest part of the window freed its attempts (one or a few): using them blocks again.
	freed := 0
	for ; freed <= 5; freed++ {
		if _, b := f.Blocked(addr); b {
			break
		}
		f.Fail(addr)
	}
	if freed < 1 || freed > 4 {
		t.Fatalf("%d attempts freed, want 1 to 4 (those of the oldest part)", freed)
	}
	clk.Add(2 * time.Minute)
	if _, b := f.Blocked(addr); b {
		t.Fatal("blocked two windows later")
	}
}

// Whatever the timing of the failures, no window-long span holds more than Limit failures
// (the attacker's store calls per window are bounded by the limit).
func TestNeverMoreThanLimitPerWindow(t *testing.T) {
	const limit, window = 20, 10 * time.Second
	f, clk := newLimiter(t, Config{Limit: limit, Window: window})
	var fails []time.Time
	for step := 0; step < 20000; step++ {
		if _, b := f.Blocked(addr); !b {
			f.Fail(addr)
			fails = append(fails, clk.Now())
		}
		clk.Add(time.Duration(7+step%13) * time.Millisecond)
	}
	for i := range fails {
		j := i + limit
		if j < len(fails) && fails[j].Sub(fails[i]) < window {
			t.Fatalf("%d failures within %v", limit+1, fails[j].Sub(fails[i]))
		}
	}
	if perWindow := float64(len(fails)) / (clk.Now().Sub(fails[0]).Seconds() / window.Seconds()); perWindow < limit*0.8 {
		t.Fatalf("only %.1f failures let through per window, want close to %d", perWindow, limit)
	}
}

func TestIPv6ByPrefixAndMappedIPv4(t *testing.T) {
	f, _ := newLimiter(t, Config{Limit: 2, IPv6Prefix: 64})
	f.Fail(netip.MustParseAddr("2001:db8:1:2::1"))
	f.Fail(netip.MustParseAddr("2001:db8:1:2:ffff::9"))
	if _, b := f.Blocked(netip.MustParseAddr("2001:db8:1:2:abcd::1")); !b {
		t.Fatal("another address of the same /64 is not blocked")
	}
	if _, b := f.Blocked(netip.MustParseAddr("2001:db8:1:3::1")); b {
		t.Fatal("the next /64 is blocked")
	}
	f.Fail(netip.MustParseAddr("198.51.100.1"))
	f.Fail(netip.MustParseAddr("::ffff:198.51.100.1"))
	if _, b := f.Blocked(netip.MustParseAddr("198.51.100.1")); !b {
		t.Fatal("an IPv4 address and its IPv4-mapped form count apart")
	}
	if _, b := f.Blocked(netip.MustParseAddr("198.51.100.2")); b {
		t.Fatal("IPv4 addresses are grouped")
	}
	g, _ := newLimiter(t, Config{Limit: 1, IPv6Prefix: 128})
	g.Fail(netip.MustParseAddr("2001:db8::1"))
	if _, b := g.Blocked(netip.MustParseAddr("2001:db8::2")); b {
		t.Fatal("ipv6_prefix 128 groups addresses")
	}
	var none netip.Addr
	g.Fail(none)
	if _, b := g.Blocked(none); b || g.Tracked() != 1 {
		t.Fatal("an unknown address is tracked")
	}
}

// An address-rotating flood never grows the limiter past MaxClients: the least recently
// failing clients are forgotten, and the heap stays where it was after start-up.
func TestMemoryBoundedUnderARotatingFlood(t *testing.T) {
	const maxClients = 10_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f, _ := newLimiter(t, Config{Limit: 3, MaxClients: maxClients})
	runtime.GC()
	var built runtime.MemStats
	runtime.ReadMemStats(&built)
	for i := range 50_000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		f.Fail(a)
		f.Blocked(a)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if n := f.Tracked(); n > maxClients+shardCount {
		t.Fatalf("tracking %d clients, more than max_clients %d", n, maxClients)
	}
	start := int64(built.HeapAlloc) - int64(before.HeapAlloc)
	grown := int64(after.HeapAlloc) - int64(built.HeapAlloc)
	t.Logf("limiter for %d clients: %d KiB at start; after 50,000 addresses %+d KiB", maxClients, start/1024, grown/1024)
	// Unbounded, five times max_clients would cost five times the start-up size.
	if grown > start/2 {
		t.Fatalf("the heap grew by %d KiB under the flood (%d KiB at start)", grown/1024, start/1024)
	}
	// The most recent failers are still tracked and blocked only once at the limit.
	last := netip.AddrFrom4([4]byte{10, 0, 0xc3, 0x4f}) // i = 49999
	f.Fail(last)
	f.Fail(last)
	if _, b := f.Blocked(last); !b {
		t.Fatal("the most recent failer was forgotten")
	}
	runtime.KeepAlive(f)
}

func TestConfigRanges(t *testing.T) {
	for _, c := range []Config{{Limit: -1}, {Window: time.Millisecond}, {MaxClients: -3}, {IPv6Prefix: 129}} {
		if _, err := NewFailedAttempts(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	f, err := NewFailedAttempts(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if c := f.Config(); c.Limit != 20 || c.Window != time.Minute || c.MaxClients != 100_000 || c.IPv6Prefix != 64 {
		t.Fatalf("defaults %+v", c)
	}
}

func TestNoAllocations(t *testing.T) {
	f, _ := newLimiter(t, Config{Limit: 3})
	v6 := netip.MustParseAddr("2001:db8::7")
	f.Fail(addr)
	f.Fail(v6)
	if n := testing.AllocsPerRun(1000, func() { f.Blocked(addr); f.Blocked(v6) }); n != 0 {
		t.Errorf("Blocked allocates %v times", n)
	}
	if n := testing.AllocsPerRun(1000, func() { f.Fail(addr) }); n != 0 {
		t.Errorf("Fail allocates %v times", n)
	}
}

func TestConcurrentUse(t *testing.T) {
	f, _ := newLimiter(t, Config{Limit: 50, MaxClients: 100})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				a := netip.AddrFrom4([4]byte{192, 0, byte(g), byte(i % 300)})
				f.Fail(a)
				f.Blocked(a)
			}
		}()
	}
	wg.Wait()
	if n := f.Tracked(); n > 100+shardCount {
		t.Fatalf("%d tracked", n)
	}
}

// The limiter's cost per refused request: a blocked client's check.
func BenchmarkBlockedClient(b *testing.B) {
	f, err := NewFailedAttempts(Config{})
	if err != nil {
		b.Fatal(err)
	}
	for range 20 {
		f.Fail(addr)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, blocked := f.Blocked(addr); !blocked {
				panic("not blocked")
			}
		}
	})
}

// A client the limiter does not know (every valid request's cost).
func BenchmarkUnknownClient(b *testing.B) {
	f, err := NewFailedAttempts(Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		f.Blocked(addr)
	}
}

// A flood of failures from rotating addresses (every refused invented key's cost).
func BenchmarkFailRotating(b *testing.B) {
	f, err := NewFailedAttempts(Config{})
	if err != nil {
		b.Fatal(err)
	}
	addrs := make([]netip.Addr, 1<<16)
	for i := range addrs {
		addrs[i] = netip.MustParseAddr(fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255))
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		f.Fail(addrs[i&(len(addrs)-1)])
	}
}

// Admit bounds the lookups a client can have in flight plus its failures by the limit, so
// that a burst of concurrent requests cannot overshoot it; Settle frees the slot, counting a
// failure when the lookup found nothing.
func TestAdmitBoundsConcurrentLookups(t *testing.T) {
	f, _ := newLimiter(t, Config{Limit: 5})
	// A client with no failure is not held back by its concurrency.
	clean := netip.MustParseAddr("192.0.2.50")
	for i := range 50 {
		if _, ok := f.Admit(clean); !ok {
			t.Fatalf("a client with no failure refused at lookup %d in flight", i+1)
		}
	}
	for range 50 {
		f.Settle(clean, false)
	}
	// Once it has failed, failures plus lookups in flight stay within the limit: further
	// lookups wait for one to settle, and none is refused before the limit is reached.
	f.Fail(addr)
	var admitted, refused atomic.Int64
	var maxInFlight, inFlight atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, ok := f.Admit(addr); !ok {
				refused.Add(1)
				return
			}
			admitted.Add(1)
			n := inFlight.Add(1)
			for {
				m := maxInFlight.Load()
				if n <= m || maxInFlight.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(2 * time.Millisecond)
			inFlight.Add(-1)
			// The first 3 of them found nothing; the rest were real keys.
			f.Settle(addr, i < 3)
		}()
	}
	close(start)
	wg.Wait()
	if m := maxInFlight.Load(); m > 4 {
		t.Fatalf("%d lookups in flight at once after a failure, want at most the attempts left (4)", m)
	}
	if admitted.Load()+refused.Load() != 30 || refused.Load() != 0 && admitted.Load() < 27 {
		t.Fatalf("admitted %d, refused %d", admitted.Load(), refused.Load())
	}
	if _, b := f.Blocked(addr); b {
		t.Fatalf("blocked with %d failures of 5", 1+min(3, admitted.Load()))
	}
	// Over the limit: refused with the time until an attempt frees up.
	f.Fail(addr)
	if wait, ok := f.Admit(addr); ok || wait <= 0 {
		t.Fatalf("admitted at the limit (or no wait: %v)", wait)
	}
	// An unknown address is admitted.
	var none netip.Addr
	if _, ok := f.Admit(none); !ok {
		t.Fatal("an unknown address was refused")
	}
}

func TestAdmitSettleNoAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocations are counted without -race")
	}
	f, _ := newLimiter(t, Config{Limit: 1000})
	if n := testing.AllocsPerRun(500, func() { f.Admit(addr); f.Settle(addr, false) }); n != 0 {
		t.Fatalf("Admit+Settle allocate %v times", n)
	}
}
