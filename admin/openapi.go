package admin

import (
	_ "embed"
	"net/http"
	"strconv"
)

// The OpenAPI 3.1 description of this API is docs/openapi.yaml; go:embed cannot reach
// outside this directory, so openapi.yaml here is a copy of it (a test keeps the two the same).
//
//go:generate cp ../docs/openapi.yaml openapi.yaml

// OpenAPIPath is where the API serves its OpenAPI description.
const OpenAPIPath = "/openapi.yaml"

//go:embed openapi.yaml
var openAPIYAML []byte

// OpenAPI returns the OpenAPI description of the API, in YAML.
func OpenAPI() []byte { return append([]byte(nil), openAPIYAML...) }

// openAPI answers GET /openapi.yaml without a token: the description holds nothing secret,
// and client generators fetch it unauthenticated.
func (a *API) openAPI(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/yaml")
	h.Set("Content-Length", strconv.Itoa(len(openAPIYAML)))
	h.Set("X-Content-Type-Options", "nosniff")
	// It changes only with the binary: a cache may keep it, if it asks again.
	h.Set("Cache-Control", "no-cache")
	w.Write(openAPIYAML)
}
