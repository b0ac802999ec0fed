package filestore

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/keygate/keygate/fleet"
)

// The file store serves one process, so its fleet is that process' gateways, kept in
// memory, and every invalidation is applied before the write that made it returns: every
// gateway has confirmed at once.
type gateways struct {
	mu sync.Mutex
	m  map[string]fleet.Gateway
}

// Heartbeat implements fleet.Registry.
func (s *Store) Heartbeat(_ context.Context, g fleet.Gateway) error {
	s.fleet.mu.Lock()
	defer s.fleet.mu.Unlock()
	if s.fleet.m == nil {
		s.fleet.m = make(map[string]fleet.Gateway)
	}
	g.LastSeenAt = time.Now().UTC().Truncate(time.Millisecond)
	s.fleet.m[g.ID] = g
	return nil
}

// Leave implements fleet.Registry.
func (s *Store) Leave(_ context.Context, id string) error {
	s.fleet.mu.Lock()
	defer s.fleet.mu.Unlock()
	delete(s.fleet.m, id)
	return nil
}

// Gateways implements fleet.Registry.
func (s *Store) Gateways(_ context.Context, timeout time.Duration) ([]fleet.Gateway, error) {
	s.fleet.mu.Lock()
	defer s.fleet.mu.Unlock()
	out := []fleet.Gateway{}
	for _, g := range s.fleet.m {
		if time.Since(g.LastSeenAt) <= timeout {
			out = append(out, g)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// AckAs implements fleet.Registry: nothing to acknowledge, writes are applied at once.
func (s *Store) AckAs(string) {}

// Published implements fleet.Registry: nothing to wait for.
func (s *Store) Published() fleet.Position { return "" }

// Acked implements fleet.Registry: every gateway has applied every invalidation.
func (s *Store) Acked(_ context.Context, ids []string, _ fleet.Position) ([]bool, error) {
	out := make([]bool, len(ids))
	for i := range out {
		out[i] = true
	}
	return out, nil
}

// Interface guards
var _ fleet.Registry = (*Store)(nil)
