package verify

import (
	"encoding/binary"
	"net/netip"
	"sort"
)

// ipSet is a key's allowed addresses as sorted, merged ranges of addresses, one list per
// family (an IPv4 client matches IPv4 prefixes only, as netip.Prefix.Contains has it): a
// membership test is a binary search, not a loop over prefixes.
type ipSet struct {
	v4, v6 ranges
}

// ranges are sorted, disjoint, non-touching [lo, hi] address ranges (IPv4 as IPv4-mapped).
type ranges struct {
	lo, hi []u128
}

type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

func (a u128) next() (u128, bool) {
	if a.lo != ^uint64(0) {
		return u128{a.hi, a.lo + 1}, true
	}
	if a.hi != ^uint64(0) {
		return u128{a.hi + 1, 0}, true
	}
	return a, false // the last address
}

func toU128(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// newIPSet builds the set of prefixes; nil for none (any address allowed).
func newIPSet(prefixes []netip.Prefix) *ipSet {
	if prefixes == nil {
		return nil
	}
	type rng struct{ lo, hi u128 }
	var r4, r6 []rng
	for _, p := range prefixes {
		p = p.Masked()
		bits := p.Bits()
		if p.Addr().Is4() {
			bits += 96
		}
		lo := toU128(p.Addr())
		hi := lo
		// Set the host bits.
		host := 128 - bits
		switch {
		case host >= 64:
			hi.lo = ^uint64(0)
			if host > 64 {
				hi.hi |= ^uint64(0) >> (128 - host)
			}
		case host > 0:
			hi.lo |= ^uint64(0) >> (64 - host)
		}
		if p.Addr().Is4() {
			r4 = append(r4, rng{lo, hi})
		} else {
			r6 = append(r6, rng{lo, hi})
		}
	}
	merge := func(rs []rng) (out ranges) {
		sort.Slice(rs, func(i, j int) bool { return rs[i].lo.less(rs[j].lo) })
		for _, r := range rs {
			if n := len(out.lo); n > 0 {
				// Merge with the previous range when they overlap or touch.
				if next, ok := out.hi[n-1].next(); !ok || !next.less(r.lo) {
					if out.hi[n-1].less(r.hi) {
						out.hi[n-1] = r.hi
					}
					continue
				}
			}
			out.lo = append(out.lo, r.lo)
			out.hi = append(out.hi, r.hi)
		}
		return out
	}
	return &ipSet{v4: merge(r4), v6: merge(r6)}
}

// contains reports whether a is in the set (an invalid address never is).
func (s *ipSet) contains(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	a = a.Unmap().WithZone("")
	rs := &s.v6
	if a.Is4() {
		rs = &s.v4
	}
	x := toU128(a)
	// Binary search for the first range starting after x; the one before it is the
	// candidate.
	lo, hi := 0, len(rs.lo)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if x.less(rs.lo[m]) {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo > 0 && !rs.hi[lo-1].less(x)
}
