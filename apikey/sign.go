package apikey

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"hash"
	"hash/crc32"
	"sync"
)

// Signed keys. With signing secrets configured, the last TagLen of a key's 32 random
// characters are not random: they are a tag, HMAC-SHA-256 under the first secret of the
// characters before it (the prefix and 24 random characters), truncated and written in
// base62. The key stays a key of the usual format (prefix, 46 characters, CRC-32 checksum
// over everything before it). A presented key whose tag verifies under none of the secrets
// was not minted here: it can be refused without any lookup, so an invented key costs an
// attacker's target one hash, never a store call.

// TagLen is how many characters of a signed key are its tag (about 47.6 bits).
const TagLen = 8

const (
	taggedLen = prefixLen + randomLen - TagLen // what the tag is computed over
	tagSpace  = 62 * 62 * 62 * 62 * 62 * 62 * 62 * 62
)

// MinSecretLen is the shortest signing secret accepted.
const MinSecretLen = 16

// Signer mints signed keys and verifies their tags. It is safe for concurrent use and does
// not allocate per call. The zero value (and nil) signs nothing and verifies nothing.
type Signer struct {
	pools []*sync.Pool // one per secret, the first signs; of *tagState
}

// tagState is a pooled HMAC with its buffers, kept off the stack because they would escape
// through the hash.Hash interface.
type tagState struct {
	m   hash.Hash
	in  [taggedLen]byte
	sum [sha256.Size]byte
}

// NewSigner returns a Signer for the secrets: the first signs new keys, every one verifies
// (several allow rotation: add the new secret first, roll the keys, remove the old one).
func NewSigner(secrets ...[]byte) (*Signer, error) {
	if len(secrets) == 0 {
		return nil, errors.New("key signing needs at least one secret")
	}
	s := &Signer{}
	for i, sec := range secrets {
		if len(sec) < MinSecretLen {
			// Never echo the secret itself.
			return nil, errors.New("key signing secret " + itoa(i+1) + " is shorter than 16 bytes")
		}
		p := append([]byte(nil), sec...)
		s.pools = append(s.pools, &sync.Pool{New: func() any { return &tagState{m: hmac.New(sha256.New, p)} }})
	}
	return s, nil
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

// Enabled reports whether s signs keys.
func (s *Signer) Enabled() bool { return s != nil && len(s.pools) > 0 }

// putTag writes into dst (TagLen bytes) the tag of body (taggedLen bytes) under secret i.
func (s *Signer) putTag(dst []byte, i int, body string) {
	st := s.pools[i].Get().(*tagState)
	st.m.Reset()
	copy(st.in[:], body)
	st.m.Write(st.in[:])
	st.m.Sum(st.sum[:0])
	n := binary.BigEndian.Uint64(st.sum[:8]) % tagSpace
	s.pools[i].Put(st)
	for j := TagLen - 1; j >= 0; j-- {
		dst[j] = alphabet[n%62]
		n /= 62
	}
}

// Generate returns a new key for env, signed under the first secret. Without a secret it
// is Generate.
func (s *Signer) Generate(env Environment) (string, error) {
	if !s.Enabled() {
		return Generate(env)
	}
	p := env.KeyPrefix()
	if p == "" {
		return "", errors.New("unknown environment")
	}
	var b [Len]byte
	copy(b[:], p)
	if err := randomBase62(b[prefixLen:taggedLen]); err != nil {
		return "", err
	}
	s.putTag(b[taggedLen:prefixLen+randomLen], 0, string(b[:taggedLen]))
	putChecksum(b[prefixLen+randomLen:], crc32.ChecksumIEEE(b[:prefixLen+randomLen]))
	return string(b[:]), nil
}

// Verify reports whether key (of any content) carries a tag that verifies under one of the
// secrets. It does not check the format or checksum (Parse does).
func (s *Signer) Verify(key string) bool {
	if !s.Enabled() || len(key) != Len {
		return false
	}
	var want, got [TagLen]byte
	copy(got[:], key[taggedLen:])
	ok := 0
	for i := range s.pools {
		s.putTag(want[:], i, key[:taggedLen])
		ok |= subtle.ConstantTimeCompare(want[:], got[:])
	}
	return ok == 1
}
