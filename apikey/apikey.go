// Package apikey is the key format of keygate: generating, parsing, checksumming, hashing and
// masking `sk_live_…` / `sk_test_…` keys. Pure functions, no I/O.
//
// A key is an environment prefix (`sk_live_` or `sk_test_`), 32 random base62 characters and a
// 6-character checksum: the CRC-32 (IEEE) of the 40 characters before it, in base62 with the
// alphabet 0-9A-Za-z, left-padded with '0'. The checksum lets the gateway (and secret scanners)
// refuse a mistyped or invented key without any lookup.
package apikey

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"hash"
	"hash/crc32"
	"sync"
)

// Environment is the kind of instance a key belongs to.
type Environment uint8

const (
	// EnvUnknown is the zero value; no valid key has it.
	EnvUnknown Environment = iota
	// Sandbox keys start with sk_test_.
	Sandbox
	// Production keys start with sk_live_.
	Production
)

// String returns the environment's name as the API spells it.
func (e Environment) String() string {
	switch e {
	case Sandbox:
		return "sandbox"
	case Production:
		return "production"
	}
	return "unknown"
}

// KeyPrefix returns the prefix keys of this environment start with.
func (e Environment) KeyPrefix() string {
	switch e {
	case Sandbox:
		return testPrefix
	case Production:
		return livePrefix
	}
	return ""
}

// ParseEnvironment reads "sandbox" or "production".
func ParseEnvironment(s string) (Environment, error) {
	switch s {
	case "sandbox":
		return Sandbox, nil
	case "production":
		return Production, nil
	}
	return EnvUnknown, errors.New(`environment must be "sandbox" or "production"`)
}

const (
	livePrefix = "sk_live_"
	testPrefix = "sk_test_"

	prefixLen   = 8
	randomLen   = 32
	checksumLen = 6
	// Len is the length of every key.
	Len = prefixLen + randomLen + checksumLen

	// DisplayPrefixLen is how many characters of a key are shown: the environment prefix
	// plus the first 6 random characters.
	DisplayPrefixLen = prefixLen + 6

	alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// Errors returned by Parse. They never contain the key.
var (
	ErrFormat   = errors.New("api key is malformed")
	ErrChecksum = errors.New("api key checksum does not match")
)

// Generate returns a new key for env, with 32 random characters from crypto/rand.
func Generate(env Environment) (string, error) {
	p := env.KeyPrefix()
	if p == "" {
		return "", errors.New("unknown environment")
	}
	var b [Len]byte
	copy(b[:], p)
	if err := randomBase62(b[prefixLen : prefixLen+randomLen]); err != nil {
		return "", err
	}
	putChecksum(b[prefixLen+randomLen:], crc32.ChecksumIEEE(b[:prefixLen+randomLen]))
	return string(b[:]), nil
}

// Key ids: "key_" and 24 random base62 characters. They are not derived from the secret.
const (
	KeyIDPrefix = "key_"
	keyIDRandom = 24
	// KeyIDLen is the length of every key id.
	KeyIDLen = len(KeyIDPrefix) + keyIDRandom
)

// NewKeyID returns a new random key id.
func NewKeyID() (string, error) { return NewID(KeyIDPrefix, keyIDRandom) }

// ValidKeyID reports whether id has the form of a key id.
func ValidKeyID(id string) bool {
	if len(id) != KeyIDLen || id[:len(KeyIDPrefix)] != KeyIDPrefix {
		return false
	}
	for i := len(KeyIDPrefix); i < len(id); i++ {
		if !isBase62(id[i]) {
			return false
		}
	}
	return true
}

// NewID returns prefix followed by n random base62 characters (event ids: "evt_…").
func NewID(prefix string, n int) (string, error) {
	b := make([]byte, len(prefix)+n)
	copy(b, prefix)
	if err := randomBase62(b[len(prefix):]); err != nil {
		return "", err
	}
	return string(b), nil
}

// randomBase62 fills dst with uniformly random base62 characters, by rejection sampling
// so that no character is more likely than another.
func randomBase62(dst []byte) error {
	var buf [64]byte
	i := 0
	for i < len(dst) {
		if _, err := rand.Read(buf[:]); err != nil {
			return err
		}
		for _, c := range buf {
			if c >= 248 { // 248 = 4*62: keep the distribution uniform
				continue
			}
			dst[i] = alphabet[c%62]
			i++
			if i == len(dst) {
				break
			}
		}
	}
	return nil
}

// Checksum returns the 6-character checksum of the first 40 characters of a key.
func Checksum(body string) string {
	var out [checksumLen]byte
	putChecksum(out[:], crc32.ChecksumIEEE([]byte(body)))
	return string(out[:])
}

func putChecksum(dst []byte, sum uint32) {
	for i := checksumLen - 1; i >= 0; i-- {
		dst[i] = alphabet[sum%62]
		sum /= 62
	}
}

// Parse checks a key's format and checksum and returns its environment. It does not
// allocate, and its errors never contain the key.
func Parse(key string) (Environment, error) {
	if len(key) != Len {
		return EnvUnknown, ErrFormat
	}
	var env Environment
	switch key[:prefixLen] {
	case livePrefix:
		env = Production
	case testPrefix:
		env = Sandbox
	default:
		return EnvUnknown, ErrFormat
	}
	for i := prefixLen; i < Len; i++ {
		if !isBase62(key[i]) {
			return EnvUnknown, ErrFormat
		}
	}
	var want [checksumLen]byte
	putChecksum(want[:], crcIEEEString(key[:prefixLen+randomLen]))
	if string(want[:]) != key[prefixLen+randomLen:] {
		return EnvUnknown, ErrChecksum
	}
	return env, nil
}

// crcIEEEString is crc32.ChecksumIEEE of a string without converting it to a slice (which
// would allocate: the slice escapes through crc32's function variable).
func crcIEEEString(s string) uint32 {
	crc := ^uint32(0)
	for i := 0; i < len(s); i++ {
		crc = crc32.IEEETable[byte(crc)^s[i]] ^ (crc >> 8)
	}
	return ^crc
}

func isBase62(c byte) bool {
	return '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z'
}

// DisplayPrefix returns the part of a key that may be shown: "sk_live_abc123". The key must
// have passed Parse.
func DisplayPrefix(key string) string {
	return key[:DisplayPrefixLen]
}

// Mask returns a display prefix as the page and CLI show it: "sk_live_abc123…".
func Mask(displayPrefix string) string {
	return displayPrefix + "…"
}

// Hash is the stored form of a key: SHA-256, or HMAC-SHA-256 with a pepper.
type Hash [sha256.Size]byte

// Hasher turns keys into hashes. The zero value is plain SHA-256. It is safe for concurrent use
// and does not allocate per call.
type Hasher struct {
	pool *sync.Pool // of *hmacState; nil: plain SHA-256
}

// hmacState is a pooled HMAC with its buffers, kept off the stack because they would escape
// through the hash.Hash interface.
type hmacState struct {
	m   hash.Hash
	buf [Len]byte
	out Hash
}

// NewHasher returns a Hasher that uses HMAC-SHA-256 keyed with pepper, or plain SHA-256 when
// pepper is empty.
func NewHasher(pepper []byte) Hasher {
	if len(pepper) == 0 {
		return Hasher{}
	}
	p := append([]byte(nil), pepper...)
	return Hasher{pool: &sync.Pool{New: func() any { return &hmacState{m: hmac.New(sha256.New, p)} }}}
}

// Sum returns the hash of key.
func (h Hasher) Sum(key string) Hash {
	if h.pool == nil {
		if len(key) == Len {
			var b [Len]byte
			copy(b[:], key)
			return sha256.Sum256(b[:])
		}
		return sha256.Sum256([]byte(key))
	}
	st := h.pool.Get().(*hmacState)
	st.m.Reset()
	if len(key) == Len {
		copy(st.buf[:], key)
		st.m.Write(st.buf[:])
	} else {
		st.m.Write([]byte(key))
	}
	st.m.Sum(st.out[:0])
	out := st.out
	h.pool.Put(st)
	return out
}
