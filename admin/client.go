package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// ClientTimeout bounds each call of a Client whose HTTP field is nil.
const ClientTimeout = 30 * time.Second

// maxAnswer bounds how much of an answer a Client reads: a page of 1000 keys is well under
// a megabyte, so anything near this is not the admin API talking.
const maxAnswer = 16 << 20

// Client calls the admin JSON API (the `keys` CLI is built on it). The token travels only in
// the Authorization header: it is never part of a URL or of an error.
type Client struct {
	// BaseURL is the admin endpoint, e.g. http://localhost:9180 (a path prefix is kept).
	BaseURL string
	// Token is the admin token, sent as "Authorization: Bearer <token>".
	Token string
	// HTTP is the client used; nil means one with a ClientTimeout timeout that does not
	// follow redirects.
	HTTP *http.Client
}

// Error is a refusal by the admin API: its error object and the HTTP status. An answer
// that is not the API's error shape (a proxy's error page, say) has an empty Code.
type Error struct {
	Status  int
	Type    string
	Code    string
	Message string
}

// Error returns "<message> (<code>)".
func (e *Error) Error() string {
	if e.Code == "" {
		return e.Message
	}
	return e.Message + " (" + e.Code + ")"
}

// Identity is the answer of GET /v1/me: who the token is and what it may do.
type Identity struct {
	Name        string       `json:"name"`
	Permissions []Permission `json:"permissions"`
	// Instances is ["*"] for a token that covers every instance.
	Instances []string `json:"instances"`
}

var defaultClient = &http.Client{
	Timeout: ClientTimeout,
	// A redirect would either resend the token somewhere else or silently turn a POST into
	// a GET: stop and say where it pointed instead.
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// Me returns the token's name, permissions and instances.
func (c *Client) Me(ctx context.Context) (Identity, error) {
	var out Identity
	err := c.do(ctx, http.MethodGet, "/v1/me", nil, nil, &out)
	return out, err
}

// Instances returns the instances the token covers.
func (c *Client) Instances(ctx context.Context) (List[Instance], error) {
	var out List[Instance]
	err := c.do(ctx, http.MethodGet, "/v1/instances", nil, nil, &out)
	return out, err
}

// Gateways returns the live gateways of the fleet (any valid token).
func (c *Client) Gateways(ctx context.Context) ([]Gateway, error) {
	var out struct {
		Data []Gateway `json:"data"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/gateways", nil, nil, &out)
	return out.Data, err
}

// CreateInstance creates an instance (permission instance.manage).
func (c *Client) CreateInstance(ctx context.Context, id, name, environment string) (Instance, error) {
	var out Instance
	body := map[string]string{"id": id, "name": name, "environment": environment}
	err := c.do(ctx, http.MethodPost, "/v1/instances", nil, body, &out)
	return out, err
}

// CreateKey creates a key in an instance; expiresAt is a date (YYYY-MM-DD), an RFC 3339
// time, or "" for a key that never expires. The answer carries the secret, shown only here.
func (c *Client) CreateKey(ctx context.Context, instance, name string, expiresAt string) (Key, error) {
	return c.CreateKeyWith(ctx, instance, NewKey{Name: name, ExpiresAt: expiresAt})
}

// NewKey is what CreateKeyWith asks for. The zero restrictions restrict nothing.
type NewKey struct {
	Name string
	// ExpiresAt is a date (YYYY-MM-DD), an RFC 3339 time, or "" for never.
	ExpiresAt string
	// Scopes: nil for any route.
	Scopes []string
	// AllowedIPs are addresses or CIDR prefixes: nil for any address.
	AllowedIPs []string
	// Metadata: nil or empty for none.
	Metadata map[string]string
	// RateLimit and Quota: nil for none.
	RateLimit *RateLimit
	Quota     *Quota
}

// CreateKeyWith creates a key with the name, expiry and restrictions of nk. A restriction
// is sent as it is (an empty list too, which the API refuses) unless it is nil.
func (c *Client) CreateKeyWith(ctx context.Context, instance string, nk NewKey) (Key, error) {
	p, err := instancePath(instance, "/keys")
	if err != nil {
		return Key{}, err
	}
	body := map[string]any{"name": nk.Name}
	if nk.ExpiresAt != "" {
		body["expires_at"] = nk.ExpiresAt
	}
	if nk.Scopes != nil {
		body["scopes"] = nk.Scopes
	}
	if nk.AllowedIPs != nil {
		body["allowed_ips"] = nk.AllowedIPs
	}
	if len(nk.Metadata) > 0 {
		body["metadata"] = nk.Metadata
	}
	if nk.RateLimit != nil {
		body["rate_limit"] = nk.RateLimit
	}
	if nk.Quota != nil {
		body["quota"] = nk.Quota
	}
	var out Key
	err = c.do(ctx, http.MethodPost, p, nil, body, &out)
	return out, err
}

// KeyChanges says what UpdateKey changes: a nil field is not sent and stays as it is.
type KeyChanges struct {
	Name *string
	// ExpiresAt is a date (YYYY-MM-DD) or an RFC 3339 time; a pointer to "" means never.
	ExpiresAt *string
	// Scopes: a pointer to nil means any route.
	Scopes *[]string
	// AllowedIPs: a pointer to nil means any address.
	AllowedIPs *[]string
	// Metadata replaces the whole object: a pointer to nil or to an empty map clears it.
	Metadata *map[string]string
	// RateLimit and Quota: a pointer to nil removes them.
	RateLimit **RateLimit
	Quota     **Quota
}

// UpdateKey changes some fields of a key (permission apiKey.create) and returns it.
func (c *Client) UpdateKey(ctx context.Context, instance, id string, ch KeyChanges) (Key, error) {
	p, err := keyPath(instance, id, "")
	if err != nil {
		return Key{}, err
	}
	body := map[string]any{}
	if ch.Name != nil {
		body["name"] = *ch.Name
	}
	if ch.ExpiresAt != nil {
		if *ch.ExpiresAt == "" {
			body["expires_at"] = nil
		} else {
			body["expires_at"] = *ch.ExpiresAt
		}
	}
	if ch.Scopes != nil {
		body["scopes"] = *ch.Scopes // nil is sent as null
	}
	if ch.AllowedIPs != nil {
		body["allowed_ips"] = *ch.AllowedIPs
	}
	if ch.Metadata != nil {
		m := *ch.Metadata
		if m == nil {
			m = map[string]string{}
		}
		body["metadata"] = m
	}
	if ch.RateLimit != nil {
		body["rate_limit"] = *ch.RateLimit // nil is sent as null
	}
	if ch.Quota != nil {
		body["quota"] = *ch.Quota
	}
	var out Key
	err = c.do(ctx, http.MethodPatch, p, nil, body, &out)
	return out, err
}

// ListKeys returns one page of an instance's keys, newest first. limit 0 leaves the page
// size to the API (100); startingAfter and status "" are not sent.
func (c *Client) ListKeys(ctx context.Context, instance string, limit int, startingAfter, status string) (List[Key], error) {
	p, err := instancePath(instance, "/keys")
	if err != nil {
		return List[Key]{}, err
	}
	var out List[Key]
	err = c.do(ctx, http.MethodGet, p, listQuery(limit, startingAfter, status), nil, &out)
	return out, err
}

// GetKey returns one key.
func (c *Client) GetKey(ctx context.Context, instance, id string) (Key, error) {
	p, err := keyPath(instance, id, "")
	if err != nil {
		return Key{}, err
	}
	var out Key
	err = c.do(ctx, http.MethodGet, p, nil, nil, &out)
	return out, err
}

// RevokeKey revokes a key and returns it; revoking a revoked key succeeds and changes
// nothing.
func (c *Client) RevokeKey(ctx context.Context, instance, id string) (Key, error) {
	p, err := keyPath(instance, id, "")
	if err != nil {
		return Key{}, err
	}
	var out Key
	err = c.do(ctx, http.MethodDelete, p, nil, nil, &out)
	return out, err
}

// RollKey replaces a key by a new one (returned with its secret); the old key keeps
// working for graceSeconds (0: it stops at once).
func (c *Client) RollKey(ctx context.Context, instance, id string, graceSeconds int64) (Key, error) {
	p, err := keyPath(instance, id, "/roll")
	if err != nil {
		return Key{}, err
	}
	body := map[string]int64{"expire_old_in_seconds": graceSeconds}
	var out Key
	err = c.do(ctx, http.MethodPost, p, nil, body, &out)
	return out, err
}

// Events returns one page of an instance's audit trail, newest first.
func (c *Client) Events(ctx context.Context, instance string, limit int, startingAfter string) (List[Event], error) {
	p, err := instancePath(instance, "/events")
	if err != nil {
		return List[Event]{}, err
	}
	var out List[Event]
	err = c.do(ctx, http.MethodGet, p, listQuery(limit, startingAfter, ""), nil, &out)
	return out, err
}

// KeyUsage returns a key's usage (id "": the instance's keys summed) in buckets of
// granularity ("" leaves it to the API: hour) from `from` to `to` (zero times are not sent).
func (c *Client) KeyUsage(ctx context.Context, instance, id, granularity string, from, to time.Time) (Usage, error) {
	var p string
	var err error
	if id == "" {
		p, err = instancePath(instance, "/usage")
	} else {
		p, err = keyPath(instance, id, "/usage")
	}
	if err != nil {
		return Usage{}, err
	}
	q := url.Values{}
	if granularity != "" {
		q.Set("granularity", granularity)
	}
	// Fractions of a second are sent: a `to` just past a bucket's start includes that bucket.
	if !from.IsZero() {
		q.Set("from", from.UTC().Format(time.RFC3339Nano))
	}
	if !to.IsZero() {
		q.Set("to", to.UTC().Format(time.RFC3339Nano))
	}
	var out Usage
	err = c.do(ctx, http.MethodGet, p, q, nil, &out)
	return out, err
}

func listQuery(limit int, startingAfter, status string) url.Values {
	q := url.Values{}
	if limit != 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if startingAfter != "" {
		q.Set("starting_after", startingAfter)
	}
	if status != "" {
		q.Set("status", status)
	}
	return q
}

// segment escapes one path segment. "", "." and ".." cannot be sent as a segment (the
// server would clean the path into another call), so they are refused here.
func segment(what, s string) (string, error) {
	switch s {
	case "":
		return "", fmt.Errorf("the %s is empty", what)
	case ".", "..":
		return "", fmt.Errorf("%q is not a valid %s", s, what)
	}
	return url.PathEscape(s), nil
}

func instancePath(instance, rest string) (string, error) {
	in, err := segment("instance id", instance)
	if err != nil {
		return "", err
	}
	return "/v1/instances/" + in + rest, nil
}

func keyPath(instance, id, rest string) (string, error) {
	p, err := instancePath(instance, "/keys/")
	if err != nil {
		return "", err
	}
	k, err := segment("key id", id)
	if err != nil {
		return "", err
	}
	return p + k + rest, nil
}

// base checks BaseURL and returns it without a trailing slash.
func (c *Client) base() (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(c.BaseURL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("the admin URL %q is not valid: use http://host:port or https://host", redactURL(c.BaseURL))
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// redactURL hides a password written into a URL.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return s
}

// do sends one call and decodes a 2xx answer into out, or returns the refusal as *Error.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	base, err := c.base()
	if err != nil {
		return err
	}
	where := base.Redacted()
	target := base.String() + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encoding the request: %v", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return fmt.Errorf("cannot build a request to the admin endpoint at %s", where)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the admin endpoint at %s: %s", where, netProblem(err, hc.Timeout))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return fmt.Errorf("reading the answer of the admin endpoint at %s: %s", where, netProblem(err, hc.Timeout))
	}
	if len(data) > maxAnswer {
		return fmt.Errorf("the answer of the admin endpoint at %s is too large", where)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return answerError(resp, data, where)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("the admin endpoint at %s answered %s with something that is not the admin API's JSON (is --admin the admin site?)", where, resp.Status)
	}
	return nil
}

// answerError turns a non-2xx answer into an *Error.
func answerError(resp *http.Response, data []byte, where string) error {
	var shape struct {
		Error *struct {
			Type    string `json:"type"`
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &shape) == nil && shape.Error != nil && shape.Error.Code != "" {
		return &Error{Status: resp.StatusCode, Type: shape.Error.Type, Code: shape.Error.Code, Message: shape.Error.Message}
	}
	msg := fmt.Sprintf("the admin endpoint at %s answered %s", where, resp.Status)
	if loc := resp.Header.Get("Location"); resp.StatusCode >= 300 && resp.StatusCode < 400 && loc != "" {
		msg += ", redirecting to " + redactURL(loc) + " (use that address)"
	}
	return &Error{Status: resp.StatusCode, Message: msg}
}

// netProblem says briefly why a call failed: "connection refused", "no such host", "timed
// out after 30s". The request URL (and so nothing secret) is left out: the caller names
// the endpoint itself.
func netProblem(err error, timeout time.Duration) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			err = context.DeadlineExceeded
		} else {
			err = ue.Err
		}
	}
	var dns *net.DNSError
	var sys *os.SyscallError
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		if timeout > 0 {
			return fmt.Sprintf("timed out after %s", timeout)
		}
		return "timed out"
	case errors.As(err, &dns):
		if dns.IsNotFound {
			return "no such host " + dns.Name
		}
		return dns.Error()
	case errors.As(err, &sys):
		return sys.Err.Error()
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	return err.Error()
}
