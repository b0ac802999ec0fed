// Package webhook POSTs the audit events of keygate's store to HTTP receivers, signed, at
// least once, from an outbox kept in the store (store.Outbox): deliveries survive restarts
// and gateway crashes, and with several gateways sharing a store each event is delivered by
// one of them (the event id de-duplicates the rare repeat). Delivery runs in the background
// only: recording an event never waits for a receiver.
//
// Each delivery is a POST of the event object with the headers
//
//	Content-Type: application/json
//	Nora-Event-Id: evt_…
//	Nora-Signature: t=<unix seconds>,v1=<hex HMAC-SHA-256 of "<t>.<body>" under the secret>
//
// (Stripe's scheme). A 2xx answer within the timeout (10 s) delivers; anything else —
// another status, a redirect, a timeout, a refused connection — is retried with exponential
// backoff (10 s doubling up to an hour, with jitter) until the event has been in the outbox
// for GiveUpAfter (72 hours by default), after which it is dropped and logged.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/store"
)

// Header names of a delivery.
const (
	HeaderSignature = "Nora-Signature"
	HeaderEventID   = "Nora-Event-Id"
)

// EventTypes are the types a webhook can select.
var EventTypes = []string{store.EventKeyCreated, store.EventKeyRevoked, store.EventKeyRolled,
	store.EventKeyUpdated, store.EventKeyLeaked}

// Webhook is one receiver.
type Webhook struct {
	URL    string
	Secret string
	// Events are the event types delivered (every type when empty).
	Events []string
}

// Check reports what is wrong with w, if anything. The error never holds the secret or the
// URL's query.
func (w Webhook) Check() error {
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Fragment != "" {
		return errors.New("the webhook URL must be an absolute http:// or https:// URL")
	}
	if u.User != nil {
		return errors.New("the webhook URL must not hold credentials: the signature authenticates deliveries")
	}
	if len(w.Secret) < 16 {
		return errors.New("the webhook secret must be at least 16 characters (e.g. openssl rand -hex 32)")
	}
	for _, t := range w.Events {
		if !slices.Contains(EventTypes, t) {
			return fmt.Errorf("unknown event type %q (known: %v)", t, EventTypes)
		}
	}
	return nil
}

// ID names the webhook in the store and in metrics: derived from its URL only, so a new
// secret or a new event list keeps its outbox.
func (w Webhook) ID() string {
	sum := sha256.Sum256([]byte(w.URL))
	return hex.EncodeToString(sum[:8])
}

// Redacted is the URL as logs may show it: scheme, host and path, without the query.
func (w Webhook) Redacted() string {
	u, err := url.Parse(w.URL)
	if err != nil {
		return "(invalid URL)"
	}
	return u.Scheme + "://" + u.Host + u.EscapedPath()
}

// Event is the event object a delivery carries: the admin API's.
type Event = admin.Event

// Body is the JSON body of the delivery of e: the event object, as the admin API's events
// list shows it.
func Body(e store.Event) ([]byte, error) {
	return json.Marshal(admin.EventObject(e))
}

// Sign returns the Nora-Signature header value for body sent at t.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Errors of Verify.
var (
	ErrBadHeader = errors.New("malformed Nora-Signature header")
	ErrSignature = errors.New("no signature matches")
	ErrTooOld    = errors.New("the signature's timestamp is outside the tolerance")
)

// Verify checks a delivery as a receiver should: the header's t is within tolerance of now,
// and one of its v1 signatures is the HMAC of "<t>.<body>" under secret (compared in
// constant time). Receivers in Go may use it; it is what the tests check deliveries with.
func Verify(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrBadHeader
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			b, err := hex.DecodeString(v)
			if err != nil {
				return ErrBadHeader
			}
			sigs = append(sigs, b)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrBadHeader
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrTooOld
	}
	want := mac(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return ErrSignature
}
