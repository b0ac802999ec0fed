package verify

import "net/http"

// Code is the outcome of one request at the gateway. It is the single source of truth for
// what the gateway answers: each code carries its HTTP status, its error type and code on
// the wire, and the message said to the client (docs/design.md, "Error codes"). A new
// outcome is one constant and one row of the table below.
type Code uint8

// The outcomes. Missing is decided before Verify (no credential was sent); Verify returns
// the others (TooManyFailedAttempts also before it, by the caller's limiter).
const (
	OK Code = iota
	Missing
	InvalidKey
	Revoked
	Expired
	WrongEnvironment
	Unavailable
	// TooManyFailedAttempts: the client is over the failed-attempt limit.
	TooManyFailedAttempts
	// IPNotAllowed: the key may not be used from the client's address.
	IPNotAllowed
	// InsufficientScope: the key lacks a scope the route requires (Result.MissingScope).
	InsufficientScope
	// RateLimitExceeded: the key is over its rate limit (Result.Limits says more).
	RateLimitExceeded
	// QuotaExceeded: the key's quota for the period is spent.
	QuotaExceeded
	// NumCodes is the number of codes, for tables indexed by Code.
	NumCodes
)

// The error types of the gateway's answers.
const (
	TypeAuthentication = "authentication_error"
	TypePermission     = "permission_error"
	TypeRateLimit      = "rate_limit_error"
	TypeAPI            = "api_error"
)

type outcome struct {
	status  int
	typ     string
	code    string
	message string
}

var outcomes = [NumCodes]outcome{
	OK:         {http.StatusOK, "", "ok", ""},
	Missing:    {http.StatusUnauthorized, TypeAuthentication, "missing_api_key", "No API key provided. Send it as 'Authorization: Bearer sk_...'."},
	InvalidKey: {http.StatusUnauthorized, TypeAuthentication, "invalid_api_key", "Invalid API key provided."},
	Revoked:    {http.StatusUnauthorized, TypeAuthentication, "api_key_revoked", "This API key has been revoked."},
	Expired:    {http.StatusUnauthorized, TypeAuthentication, "api_key_expired", "This API key has expired."},
	WrongEnvironment: {http.StatusUnauthorized, TypeAuthentication, "api_key_wrong_environment",
		"This API key belongs to the other environment: sk_live_ keys are for production, sk_test_ keys for sandbox."},
	Unavailable: {http.StatusServiceUnavailable, TypeAPI, "auth_unavailable", "API keys cannot be checked right now. Retry shortly."},
	TooManyFailedAttempts: {http.StatusTooManyRequests, TypeRateLimit, "too_many_failed_attempts",
		"Too many requests with an invalid API key came from this address. Retry after the time in Retry-After."},
	IPNotAllowed: {http.StatusForbidden, TypePermission, "api_key_ip_not_allowed", "This API key may not be used from this address."},
	InsufficientScope: {http.StatusForbidden, TypePermission, "api_key_insufficient_scope",
		"This API key lacks a scope this route requires."},
	RateLimitExceeded: {http.StatusTooManyRequests, TypeRateLimit, "rate_limit_exceeded",
		"This API key is over its rate limit. Retry after the time in Retry-After."},
	QuotaExceeded: {http.StatusTooManyRequests, TypeRateLimit, "quota_exceeded",
		"This API key's quota for the period is spent. Retry after the time in Retry-After."},
}

// ScopeMessage is InsufficientScope's message naming the missing scope.
func ScopeMessage(scope string) string {
	return "This API key lacks the scope " + scope + ", which this route requires."
}

// String returns the code as the API spells it ("ok" for OK).
func (c Code) String() string {
	if c >= NumCodes {
		return "unknown"
	}
	return outcomes[c].code
}

// Status is the HTTP status of the answer (200 for OK).
func (c Code) Status() int { return outcomes[c].status }

// Type is the answer's error type ("" for OK).
func (c Code) Type() string { return outcomes[c].typ }

// Message is what the answer says to the client. It never contains key material.
func (c Code) Message() string { return outcomes[c].message }
