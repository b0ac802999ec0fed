package store

import (
	"sync"

	"github.com/keygate/keygate/apikey"
)

// Watchers is the set of a store's subscribed watchers; stores embed it.
type Watchers struct {
	mu   sync.RWMutex
	next int
	m    map[int]Watcher
}

// Subscribe adds w until the returned function is called.
func (ws *Watchers) Subscribe(w Watcher) func() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.m == nil {
		ws.m = make(map[int]Watcher)
	}
	id := ws.next
	ws.next++
	ws.m[id] = w
	var once sync.Once
	return func() {
		once.Do(func() {
			ws.mu.Lock()
			delete(ws.m, id)
			ws.mu.Unlock()
		})
	}
}

// Each calls f for every subscribed watcher.
func (ws *Watchers) Each(f func(Watcher)) {
	ws.mu.RLock()
	defer ws.mu.RUnlock()
	for _, w := range ws.m {
		f(w)
	}
}

// Invalidate delivers an invalidation to every watcher.
func (ws *Watchers) Invalidate(hashes ...apikey.Hash) {
	ws.Each(func(w Watcher) { w.Invalidate(hashes...) })
}

// Len returns the number of subscribed watchers.
func (ws *Watchers) Len() int {
	ws.mu.RLock()
	defer ws.mu.RUnlock()
	return len(ws.m)
}
