package scanning

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"go.uber.org/zap"

	"github.com/keygate/keygate/internal/wire"
)

// Handler is the partner endpoint GitHub posts alerts to. Its refusals change nothing: a
// method other than POST is 405, a body over MaxBody 413 request_too_large, a missing or bad
// signature 401 invalid_signature, a body that is not a batch 400 invalid_request, and a
// store that is not open, fails or is too slow 503 (GitHub sends the batch again).
type Handler struct {
	Verifier *Verifier
	// Scanner returns the scanner to use, or nil while the store is not open.
	Scanner func(r *http.Request) *Scanner
	Logger  *zap.Logger // nil: no logs
}

var (
	errMethod      = wire.ErrorBody("invalid_request_error", "method_not_allowed", "Alerts are sent with POST.")
	errTooLarge    = wire.ErrorBody("invalid_request_error", "request_too_large", "The body is over 1 MiB.")
	errSignature   = wire.ErrorBody("authentication_error", "invalid_signature", "The Github-Public-Key-Signature does not verify with the key named by Github-Public-Key-Identifier.")
	errBatch       = wire.ErrorBody("invalid_request_error", "invalid_request", "The body must be a JSON array of {\"token\",\"type\",\"url\",\"source\"} objects.")
	errUnavailable = wire.ErrorBody("api_error", "store_unavailable", "The key store is not available; send the batch again.")
	errKeys        = wire.ErrorBody("api_error", "public_keys_unavailable", "GitHub's public keys could not be fetched; send the batch again.")
)

func (h *Handler) log() *zap.Logger {
	if h.Logger == nil {
		return zap.NewNop()
	}
	return h.Logger
}

func unavailable(w http.ResponseWriter, body []byte) {
	w.Header().Set("Retry-After", "1")
	wire.WriteError(w, http.StatusServiceUnavailable, body)
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		wire.WriteError(w, http.StatusMethodNotAllowed, errMethod)
		return
	}
	keyID, sig := r.Header.Get(HeaderKeyID), r.Header.Get(HeaderSignature)
	if keyID == "" || sig == "" {
		wire.WriteError(w, http.StatusUnauthorized, errSignature)
		return
	}
	if r.ContentLength > MaxBody {
		wire.WriteError(w, http.StatusRequestEntityTooLarge, errTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			wire.WriteError(w, http.StatusRequestEntityTooLarge, errTooLarge)
			return
		}
		wire.WriteError(w, http.StatusBadRequest, errBatch)
		return
	}
	if err := h.Verifier.Verify(r.Context(), keyID, sig, body); err != nil {
		if errors.Is(err, ErrKeysUnavailable) {
			h.log().Error("secret scanning alert not verified", zap.Error(err))
			unavailable(w, errKeys)
			return
		}
		h.log().Info("secret scanning alert refused: bad signature", zap.String("key_identifier", keyID), zap.Error(err))
		wire.WriteError(w, http.StatusUnauthorized, errSignature)
		return
	}
	alerts, err := DecodeBatch(body)
	if err != nil {
		wire.WriteError(w, http.StatusBadRequest, errBatch)
		return
	}
	sc := h.Scanner(r)
	if sc == nil {
		unavailable(w, errUnavailable)
		return
	}
	results, err := sc.Process(r.Context(), alerts)
	if err != nil {
		unavailable(w, errUnavailable)
		return
	}
	out, err := json.Marshal(results)
	if err != nil { // cannot happen: strings
		unavailable(w, errUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(append(out, '\n'))
}
