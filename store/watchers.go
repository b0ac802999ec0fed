package store

import (
	"sync"

	"github.com/keygate/keygate/apikey"
)

// subscribers is a set of subscribed values, each until its unsubscribe function is called.
type subscribers[T any] struct {
	mu   sync.RWMutex
	next int
	m    map[int]T
}

func (s *subscribers[T]) add(v T) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[int]T)
	}
	id := s.next
	s.next++
	s.m[id] = v
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.m, id)
			s.mu.Unlock()
		})
	}
}

func (s *subscribers[T]) each(f func(T)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, v := range s.m {
		f(v)
	}
}

func (s *subscribers[T]) len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.m)
}

// Watchers is the set of a store's subscribed watchers; stores embed it.
type Watchers struct{ s subscribers[Watcher] }

// Subscribe adds w until the returned function is called.
func (ws *Watchers) Subscribe(w Watcher) func() { return ws.s.add(w) }

// Each calls f for every subscribed watcher.
func (ws *Watchers) Each(f func(Watcher)) { ws.s.each(f) }

// Invalidate delivers an invalidation to every watcher.
func (ws *Watchers) Invalidate(hashes ...apikey.Hash) {
	ws.Each(func(w Watcher) { w.Invalidate(hashes...) })
}

// Len returns the number of subscribed watchers.
func (ws *Watchers) Len() int { return ws.s.len() }

// EventWatchers is the set of a store's WatchEvents callbacks; stores embed it and call
// Recorded after recording an event.
type EventWatchers struct{ s subscribers[func(string)] }

// WatchEvents implements Outbox.WatchEvents.
func (ws *EventWatchers) WatchEvents(f func(instance string)) func() { return ws.s.add(f) }

// Recorded calls every callback with instance.
func (ws *EventWatchers) Recorded(instance string) {
	ws.s.each(func(f func(string)) { f(instance) })
}
