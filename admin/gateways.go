package admin

import (
	"context"
	"math"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/keygate/keygate/fleet"
)

// Gateway is the API's gateway object.
type Gateway struct {
	Object     string     `json:"object"`
	ID         string     `json:"id"`
	Hostname   string     `json:"hostname"`
	StartedAt  *time.Time `json:"started_at"`
	LastSeenAt *time.Time `json:"last_seen_at"`
}

// Propagation says how far a write that can refuse a key has gone: of the Gateways live
// when it was made, how many had applied it (Confirmed) when the answer was sent, after
// ElapsedMS of waiting (at most a second). Missing names the others.
type Propagation struct {
	Gateways  int       `json:"gateways"`
	Confirmed int       `json:"confirmed"`
	ElapsedMS float64   `json:"elapsed_ms"`
	Missing   []Gateway `json:"missing,omitempty"`
}

func gatewayJSON(g fleet.Gateway) Gateway {
	return Gateway{Object: "gateway", ID: g.ID, Hostname: g.Hostname,
		StartedAt: timePtr(g.StartedAt), LastSeenAt: timePtr(g.LastSeenAt)}
}

// listGateways is GET /v1/gateways: the live gateways (any valid token).
func (a *API) listGateways(w http.ResponseWriter, r *http.Request, _ *Token) error {
	out := struct {
		Object string    `json:"object"`
		Data   []Gateway `json:"data"`
	}{Object: "list", Data: []Gateway{}}
	if a.Fleet != nil {
		ctx, cancel := a.ctx(r)
		defer cancel()
		gws, err := a.Fleet.Gateways(ctx)
		if err != nil {
			return err
		}
		for _, g := range gws {
			out.Data = append(out.Data, gatewayJSON(g))
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// confirm waits (at most fleet.DefaultWait) until every live gateway has applied the write
// this call just made, and says how far it went; nil without a fleet, or when the live
// gateways cannot be read (the write stands: the answer only lacks its propagation).
func (a *API) confirm(ctx context.Context) *Propagation {
	if a.Fleet == nil {
		return nil
	}
	p, err := a.Fleet.Confirm(ctx, fleet.DefaultWait)
	if err != nil {
		a.Logger.Warn("confirming a revocation", zap.Error(err))
		return nil
	}
	out := &Propagation{Gateways: p.Gateways, Confirmed: p.Confirmed,
		ElapsedMS: math.Round(float64(p.Elapsed.Microseconds())/100) / 10}
	for _, g := range p.Missing {
		out.Missing = append(out.Missing, gatewayJSON(g))
	}
	return out
}
