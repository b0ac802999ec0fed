// Package openapiclient is a client of the admin API generated from its OpenAPI description
// (docs/openapi.yaml) by oapi-codegen, exactly as the README tells users to generate one. Only
// the e2e tests use it: it proves the description generates a client that compiles and works
// against a real gateway. TestOpenAPIClientIsFresh fails when client.gen.go is not what the
// description generates today; regenerate it with `go generate ./e2e/openapiclient/`.
package openapiclient

//go:generate go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@v2.8.2 -config oapi-codegen.yaml -o client.gen.go ../../docs/openapi.yaml
