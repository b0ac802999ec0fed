package verify

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestIPSet(t *testing.T) {
	set := newIPSet([]netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("10.1.0.0/16"), // inside the /8: merged
		netip.MustParsePrefix("203.0.113.7/32"),
		netip.MustParsePrefix("203.0.113.8/32"), // touches the previous one
		netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("::1/128"),
	})
	for addr, want := range map[string]bool{
		"10.0.0.0": true, "10.255.255.255": true, "11.0.0.0": false, "9.255.255.255": false,
		"203.0.113.7": true, "203.0.113.8": true, "203.0.113.6": false, "203.0.113.9": false,
		"::ffff:10.2.3.4": true, "2001:db8::1": true, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff": true,
		"2001:db9::": false, "::1": true, "::2": false, "fe80::1%eth0": false,
	} {
		if got := set.contains(netip.MustParseAddr(addr)); got != want {
			t.Errorf("contains(%s) = %v, want %v", addr, got, want)
		}
	}
	if set.contains(netip.Addr{}) {
		t.Error("the zero address is contained")
	}
	if n := len(set.v4.lo) + len(set.v6.lo); n != 4 {
		t.Errorf("%d ranges after merging, want 4", n)
	}
	all := newIPSet([]netip.Prefix{netip.MustParsePrefix("::/0")})
	if all.contains(netip.MustParseAddr("1.2.3.4")) || !all.contains(netip.MustParseAddr("ffff::1")) {
		t.Error("::/0 is not exactly IPv6")
	}
	v4all := newIPSet([]netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")})
	if !v4all.contains(netip.MustParseAddr("255.255.255.255")) || v4all.contains(netip.MustParseAddr("2001:db8::1")) {
		t.Error("0.0.0.0/0 is not exactly IPv4")
	}
}

// The set agrees with netip.Prefix.Contains on random prefixes and addresses.
func TestIPSetAgreesWithPrefixes(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	randAddr := func() netip.Addr {
		if r.IntN(2) == 0 {
			return netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(256)), byte(r.IntN(256))})
		}
		var b [16]byte
		b[0], b[1], b[2] = 0x20, 0x01, byte(r.IntN(4))
		for i := 3; i < 16; i++ {
			b[i] = byte(r.IntN(256))
		}
		return netip.AddrFrom16(b)
	}
	for round := 0; round < 200; round++ {
		var ps []netip.Prefix
		for range 1 + r.IntN(20) {
			a := randAddr()
			ps = append(ps, netip.PrefixFrom(a, r.IntN(a.BitLen()+1)).Masked())
		}
		set := newIPSet(ps)
		for range 200 {
			a := randAddr()
			want := false
			for _, p := range ps {
				want = want || p.Contains(a)
			}
			if got := set.contains(a); got != want {
				t.Fatalf("prefixes %v: contains(%s) = %v, want %v", ps, a, got, want)
			}
		}
	}
}

func TestIPSetAllocs(t *testing.T) {
	set := newIPSet([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")})
	a := netip.MustParseAddr("10.9.8.7")
	if n := testing.AllocsPerRun(200, func() { set.contains(a) }); n != 0 {
		t.Fatalf("contains allocates %v times", n)
	}
}
