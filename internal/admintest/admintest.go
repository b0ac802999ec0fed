// Package admintest holds the HTTP request helpers of the admin API's tests: those over
// httptest in package admin and those through a real Caddy in package caddymodule.
//
// Every answer is checked for what any admin answer must be (a JSON object, with
// Content-Type application/json; an error in the error shape; a 401 with WWW-Authenticate),
// and recorded, with the key secrets it hands out, for the tests that check that no secret
// leaks.
package admintest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// Client sends requests to one admin API.
type Client struct {
	Base string            // the API's URL, without a trailing slash
	Tok  map[string]string // role → clear token, for Do

	mu      sync.Mutex
	answers [][]byte // every answer body and its headers
	secrets []string // every key secret the API handed out
}

// APIError is the error object of an error answer.
type APIError struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Reply is an answer of the API.
type Reply struct {
	Status int
	Header http.Header
	Body   []byte
	Obj    map[string]any // the body, decoded
	Error  APIError       // the body's "error" (zero when there is none)
}

func (r Reply) String() string {
	b := bytes.TrimSpace(r.Body)
	if len(b) > 600 {
		return fmt.Sprintf("%d %s… (%d bytes)", r.Status, b[:600], len(b))
	}
	return fmt.Sprintf("%d %s", r.Status, b)
}

// Send makes one request. body: nil (none), string or []byte (sent as is), anything else
// (sent as JSON).
func (c *Client) Send(t testing.TB, method, path string, body any, header http.Header) Reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, c.Base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := Reply{Status: resp.StatusCode, Header: resp.Header, Body: raw}
	var hdr bytes.Buffer
	resp.Header.Write(&hdr)
	c.mu.Lock()
	c.answers = append(c.answers, raw, hdr.Bytes())
	c.mu.Unlock()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q (%s)", method, path, ct, r)
	}
	if err := json.Unmarshal(raw, &r.Obj); err != nil {
		t.Fatalf("%s %s: answer is not a JSON object: %q", method, path, raw)
	}
	var e struct {
		Error APIError `json:"error"`
	}
	json.Unmarshal(raw, &e)
	r.Error = e.Error
	if r.Status >= 400 && path != "/healthz" {
		if r.Error.Type == "" || r.Error.Code == "" || r.Error.Message == "" || len(r.Obj) != 1 {
			t.Fatalf("%s %s: error answer not of the error shape: %s", method, path, r)
		}
		if r.Status == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
			t.Fatalf("%s %s: 401 without WWW-Authenticate", method, path)
		}
	}
	if s, ok := r.Obj["secret"].(string); ok {
		c.mu.Lock()
		c.secrets = append(c.secrets, s)
		c.mu.Unlock()
	}
	return r
}

// Do sends a request with the token of role ("" for none).
func (c *Client) Do(t testing.TB, method, path, role string, body any) Reply {
	t.Helper()
	h := http.Header{}
	if role != "" {
		tok, ok := c.Tok[role]
		if !ok {
			t.Fatalf("no token for role %q", role)
		}
		h = Bearer(tok)
	}
	return c.Send(t, method, path, body, h)
}

// Answers is every answer so far, body and headers, one after the other.
func (c *Client) Answers() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Join(c.answers, []byte("\n"))
}

// Secrets is every key secret the API handed out so far.
func (c *Client) Secrets() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.secrets...)
}

// Tokens is every clear token of Tok.
func (c *Client) Tokens() []string {
	var toks []string
	for _, tok := range c.Tok {
		toks = append(toks, tok)
	}
	return toks
}

// RandomToken is a fresh admin token: 32 hex digits.
func RandomToken() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// TokenSHA is the hex SHA-256 of tok, as a token is configured in the "sha256:<hex>" form.
func TokenSHA(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// Bearer is the Authorization header of tok.
func Bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// Want fails the test unless r has status and, if code is not "", the error code code.
func Want(t testing.TB, r Reply, status int, code string) {
	t.Helper()
	if r.Status != status || (code != "" && r.Error.Code != code) {
		t.Fatalf("got %s; want %d %s", r, status, code)
	}
}

// LineWith returns the first line of logs holding secret, with the secret replaced by
// <SECRET>, and whether there is one.
func LineWith(logs []byte, secret string) ([]byte, bool) {
	if !bytes.Contains(logs, []byte(secret)) {
		return nil, false
	}
	line := logs[:0]
	for _, l := range bytes.Split(logs, []byte("\n")) {
		if bytes.Contains(l, []byte(secret)) {
			line = l
			break
		}
	}
	return bytes.ReplaceAll(line, []byte(secret), []byte("<SECRET>")), true
}
