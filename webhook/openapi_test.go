package webhook

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/store"
)

// A delivery (body and headers, as post sends them) is what the OpenAPI description's
// apiKeyEvent webhook says, and a tampered one is not.
func TestDeliveryMatchesTheOpenAPIWebhook(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(admin.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	item := doc.Webhooks["apiKeyEvent"]
	if item == nil || item.Post == nil {
		t.Fatal("the description has no apiKeyEvent webhook")
	}
	body, err := Body(store.Event{ID: "evt_0123456789abcdefghijklmn", Type: store.EventKeyUpdated, Instance: "acme",
		KeyID: "key_0123456789abcdefghijklmn", Fields: []string{"scopes"}, Actor: "ops", CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	op := item.Post
	schema := op.RequestBody.Value.Content["application/json"].Schema.Value
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	if err := schema.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
		t.Fatalf("the body is not the webhook's Event: %v\n%s", err, body)
	}
	headers := map[string]string{HeaderEventID: "evt_0123456789abcdefghijklmn", HeaderSignature: Sign(secret, time.Now(), body)}
	for _, p := range op.Parameters {
		if err := p.Value.Schema.Value.VisitJSON(headers[p.Value.Name], openapi3.EnableJSONSchema2020()); err != nil {
			t.Errorf("header %s %q: %v", p.Value.Name, headers[p.Value.Name], err)
		}
	}
	// Tampered: an unknown member, a bad signature header.
	var bad any
	json.Unmarshal([]byte(`{"object":"event","id":"evt_0123456789abcdefghijklmn","type":"api_key.revoked","instance":"a","key_id":"key_0123456789abcdefghijklmn","actor":"x","created_at":"2026-12-02T00:00:00Z","extra":1}`), &bad)
	if schema.VisitJSON(bad, openapi3.EnableJSONSchema2020()) == nil {
		t.Error("a body with an unknown member passed the webhook's schema")
	}
	for _, p := range op.Parameters {
		if p.Value.Name == HeaderSignature && p.Value.Schema.Value.VisitJSON("v1=abc", openapi3.EnableJSONSchema2020()) == nil {
			t.Error("a malformed Nora-Signature passed the webhook's schema")
		}
	}
}
