package verify

import (
	"net/http"
	"strings"
	"testing"
)

// Every code has a whole row: a status, a type matching the status, a wire code of its own
// and, but for OK, a message.
func TestEveryCodeHasAnOutcome(t *testing.T) {
	wantType := map[int]string{
		http.StatusUnauthorized:       TypeAuthentication,
		http.StatusForbidden:          TypePermission,
		http.StatusTooManyRequests:    TypeRateLimit,
		http.StatusServiceUnavailable: TypeAPI,
	}
	seen := map[string]Code{}
	for c := Code(0); c < NumCodes; c++ {
		name := c.String()
		if name == "" || name == "unknown" || strings.ToLower(name) != name {
			t.Errorf("Code(%d) has wire code %q", c, name)
		}
		if other, dup := seen[name]; dup {
			t.Errorf("Code(%d) and Code(%d) share the wire code %q", c, other, name)
		}
		seen[name] = c
		if c == OK {
			if c.Status() != http.StatusOK || c.Type() != "" {
				t.Errorf("OK: status %d, type %q", c.Status(), c.Type())
			}
			continue
		}
		if want, ok := wantType[c.Status()]; !ok || c.Type() != want {
			t.Errorf("%s: status %d with type %q", name, c.Status(), c.Type())
		}
		if c.Message() == "" {
			t.Errorf("%s: message %q", name, c.Message())
		}
	}
	if Missing.String() != "missing_api_key" || Missing.Status() != http.StatusUnauthorized {
		t.Errorf("Missing = %s %d", Missing, Missing.Status())
	}
}
