package admin

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// Each operation of the OpenAPI description says the permissions its route checks: in
// x-permission, in its description, and in its security (none for the public routes).
func TestOpenAPIPermissions(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(openAPIYAML)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, rt := range routes {
		method, path, _ := strings.Cut(rt.pattern, " ")
		item := doc.Paths.Value(path)
		if item == nil || item.GetOperation(method) == nil {
			t.Errorf("%s: not described", rt.pattern)
			continue
		}
		op := item.GetOperation(method)
		var got []string
		switch x := op.Extensions["x-permission"].(type) {
		case []any:
			for _, p := range x {
				got = append(got, fmt.Sprint(p))
			}
		default:
			t.Errorf("%s: x-permission is %T, want a list", rt.pattern, x)
		}
		want := []string{}
		for _, p := range rt.perms {
			want = append(want, string(p))
		}
		if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("%s: x-permission %q, but the route checks %q", rt.pattern, got, want)
		}
		public := op.Security != nil && len(*op.Security) == 0
		if public != (rt.public != nil) {
			t.Errorf("%s: described as needing no token: %v; the route needs none: %v", rt.pattern, public, rt.public != nil)
		}
		var sentence string
		switch {
		case rt.public != nil:
			sentence = "No token needed."
		case len(want) == 0:
			sentence = "Permission: any valid token."
		default:
			sentence = "Permission: `" + strings.Join(want, "` and `") + "`."
		}
		if !strings.Contains(op.Description, sentence) {
			t.Errorf("%s: the description does not say %q:\n%s", rt.pattern, sentence, op.Description)
		}
	}
}
