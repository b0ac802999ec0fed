// Package scanning implements GitHub's secret scanning partner protocol: GitHub finds a token
// that looks like one of ours in a public place and posts it, signed, to our endpoint; we
// verify the signature with GitHub's published keys, revoke every token that is one of our
// keys, and answer which were ours. It knows nothing of Caddy.
package scanning

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

// The headers of a signed alert.
const (
	HeaderKeyID     = "Github-Public-Key-Identifier"
	HeaderSignature = "Github-Public-Key-Signature"
)

// MinRefetch is how often at most the public keys are fetched again because an alert named
// an identifier we do not know: an unsigned flood must not become a flood against GitHub.
const MinRefetch = time.Minute

// Errors of Verify. ErrSignature is the sender's fault (answer 401); ErrKeysUnavailable means
// we could not get the public keys to check with (answer 503, so that GitHub sends again).
var (
	ErrSignature       = errors.New("the signature does not verify")
	ErrKeysUnavailable = errors.New("GitHub's public keys are not available")
)

// KeySource returns GitHub's public keys document:
// {"public_keys":[{"key_identifier","key","is_current"}]}.
type KeySource func(ctx context.Context) ([]byte, error)

// maxKeysDocument bounds the public keys document (GitHub's is about 1 KiB).
const maxKeysDocument = 1 << 20

// URLSource fetches the keys from url (GitHub's is
// https://api.github.com/meta/public_keys/secret_scanning) with client (nil: a client with a
// 10 s timeout).
func URLSource(url string, client *http.Client) KeySource {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return func(ctx context.Context) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxKeysDocument+1))
		if err != nil {
			return nil, err
		}
		if len(b) > maxKeysDocument {
			return nil, fmt.Errorf("GET %s: the document is over %d bytes", url, maxKeysDocument)
		}
		return b, nil
	}
}

// FileSource reads the keys from a file in the same format, read again on each refetch.
func FileSource(path string) KeySource {
	return func(context.Context) ([]byte, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		if len(b) > maxKeysDocument {
			return nil, fmt.Errorf("%s is over %d bytes", path, maxKeysDocument)
		}
		return b, nil
	}
}

// ParseKeys reads a public keys document: every listed key (current or not: GitHub signs
// with the one it names) by its identifier. Each must be a PEM "PUBLIC KEY" of ECDSA P-256.
func ParseKeys(doc []byte) (map[string]*ecdsa.PublicKey, error) {
	var d struct {
		PublicKeys []struct {
			ID        string `json:"key_identifier"`
			Key       string `json:"key"`
			IsCurrent bool   `json:"is_current"`
		} `json:"public_keys"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("reading the public keys: %v", err)
	}
	if len(d.PublicKeys) == 0 {
		return nil, errors.New("reading the public keys: public_keys lists no key")
	}
	out := make(map[string]*ecdsa.PublicKey, len(d.PublicKeys))
	for i, k := range d.PublicKeys {
		if k.ID == "" {
			return nil, fmt.Errorf("public key %d has no key_identifier", i+1)
		}
		blk, _ := pem.Decode([]byte(k.Key))
		if blk == nil || blk.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("public key %s: not a PEM PUBLIC KEY", k.ID)
		}
		pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("public key %s: %v", k.ID, err)
		}
		ec, ok := pub.(*ecdsa.PublicKey)
		if !ok || ec.Curve != elliptic.P256() {
			return nil, fmt.Errorf("public key %s: not an ECDSA P-256 key", k.ID)
		}
		out[k.ID] = ec
	}
	return out, nil
}

// Verifier checks alerts' signatures against GitHub's public keys, which it caches. It
// fetches them on first use (or when Refresh is called, e.g. at start) and again, at most
// once every MinRefetch, when an alert names an identifier it does not know. It is safe for
// concurrent use.
type Verifier struct {
	src KeySource
	// Now is the clock (tests move it); nil: time.Now.
	Now func() time.Time

	mu        sync.Mutex // never held during a fetch: alerts signed by a known key never wait
	keys      map[string]*ecdsa.PublicKey
	lastFetch time.Time // of the last attempt, successful or not
	lastErr   error
	fetches   int
	inflight  chan struct{} // closed when the fetch under way ends; nil: none
}

// NewVerifier returns a Verifier over src.
func NewVerifier(src KeySource) *Verifier { return &Verifier{src: src} }

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// Refresh fetches the keys now, whatever the time of the last fetch (or waits for the one
// under way); the cached keys stay if it fails.
func (v *Verifier) Refresh(ctx context.Context) error {
	v.mu.Lock()
	done := v.startFetchLocked(ctx)
	v.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.lastErr
}

// startFetchLocked starts a fetch unless one is under way, and returns the channel closed
// when it ends. v.mu is held.
func (v *Verifier) startFetchLocked(ctx context.Context) <-chan struct{} {
	if v.inflight != nil {
		return v.inflight
	}
	done := make(chan struct{})
	v.inflight = done
	v.lastFetch = v.now()
	v.fetches++
	// The fetch outlives the request that asked for it (others may be waiting for it), but
	// not the source's own timeout.
	ctx = context.WithoutCancel(ctx)
	go func() {
		defer close(done)
		keys, err := v.fetch(ctx)
		v.mu.Lock()
		defer v.mu.Unlock()
		if err == nil {
			v.keys = keys
		}
		v.lastErr = err
		v.inflight = nil
	}()
	return done
}

func (v *Verifier) fetch(ctx context.Context) (map[string]*ecdsa.PublicKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	doc, err := v.src(ctx)
	if err != nil {
		return nil, err
	}
	return ParseKeys(doc)
}

// Fetches reports how many times the keys were fetched (or their fetch attempted).
func (v *Verifier) Fetches() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.fetches
}

// key returns the key of id, refetching the keys once if it is unknown and the last fetch is
// old enough (or waiting for the fetch under way).
func (v *Verifier) key(ctx context.Context, id string) (*ecdsa.PublicKey, error) {
	v.mu.Lock()
	if k := v.keys[id]; k != nil {
		v.mu.Unlock()
		return k, nil
	}
	var done <-chan struct{} = v.inflight
	if done == nil && (v.lastFetch.IsZero() || v.now().Sub(v.lastFetch) >= MinRefetch) {
		done = v.startFetchLocked(ctx)
	}
	v.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, ctx.Err())
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if k := v.keys[id]; k != nil {
		return k, nil
	}
	if v.keys == nil { // never fetched successfully: we cannot tell a bad signature
		return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, v.lastErr)
	}
	return nil, fmt.Errorf("%w: unknown key identifier", ErrSignature)
}

// Verify checks that sig (the base64 of an ASN.1 DER ECDSA P-256 signature of SHA-256(body))
// was made by the key named keyID. It returns nil, an error wrapping ErrSignature, or one
// wrapping ErrKeysUnavailable.
func (v *Verifier) Verify(ctx context.Context, keyID, sig string, body []byte) error {
	if keyID == "" || sig == "" {
		return fmt.Errorf("%w: the %s and %s headers are required", ErrSignature, HeaderKeyID, HeaderSignature)
	}
	der, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return fmt.Errorf("%w: the signature is not base64", ErrSignature)
	}
	pub, err := v.key(ctx, keyID)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	if !ecdsa.VerifyASN1(pub, sum[:], der) {
		return ErrSignature
	}
	return nil
}
