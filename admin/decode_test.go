package admin

import (
	"strings"
	"testing"
)

// Field names are exact: encoding/json alone matches them case-insensitively, which would
// take an unknown field for a known one.
func TestDecodeFieldNamesAreExact(t *testing.T) {
	api := fuzzAPI(t)
	for body, want := range map[string]int{
		`{"name":"ok"}`:                       201,
		`{"NAME":"x"}`:                        400,
		`{"Name":"x"}`:                        400,
		`{"name":"x","Expires_At":null}`:      400,
		`{"name":"x","expires_at":null}`:      201,
		`{"name":"x"} {"name":"y"}`:           400,
		`["name"]`:                            400,
		`{"name":"x","extra":{"deep":[1,2]}}`: 400,
	} {
		if got := checkCreateKeyBody(t, api, []byte(body)); got != want {
			t.Errorf("%s: status %d, want %d", strings.TrimSpace(body), got, want)
		}
	}
}
