package storetest

import (
	"fmt"
	"slices"
	"sync"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

func testConcurrentCreates(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Sandbox)
	other := x.instance("other", apikey.Sandbox)
	const n = 100
	keys := make([]store.Key, n)
	for i := range keys {
		keys[i], _ = NewKey(t, in.ID, in.Environment, fmt.Sprintf("k%03d", i), x.now)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	start := make(chan struct{})
	for i := range keys {
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			errs <- x.s.CreateKey(x.ctx, keys[i])
		}()
		go func() { // meanwhile, another instance gets keys too
			defer wg.Done()
			<-start
			k, _ := NewKey(t, other.ID, other.Environment, "o", x.now)
			errs <- x.s.CreateKey(x.ctx, k)
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent CreateKey: %v", err)
		}
	}
	listed, more, err := x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if more || len(listed) != n {
		t.Fatalf("listed %d keys (hasMore %v), want %d", len(listed), more, n)
	}
	seen := map[string]bool{}
	for _, k := range listed {
		if seen[k.ID] {
			t.Errorf("key %s listed twice", k.ID)
		}
		seen[k.ID] = true
	}
	for _, k := range keys {
		if !seen[k.ID] {
			t.Errorf("key %s lost", k.ID)
		}
		if l, err := x.s.LookupHash(x.ctx, k.Hash); err != nil || l.ID != k.ID {
			t.Errorf("LookupHash(%s) = %+v, %v", k.ID, l, err)
		}
	}
	if paged := x.listAll(in.ID, 7, "", x.now); !slices.Equal(ids(paged), ids(listed)) {
		t.Errorf("paging by 7 gives another order or set than one page")
	}
	if n2 := len(x.listAll(other.ID, 1000, "", x.now)); n2 != n {
		t.Errorf("other instance lists %d keys, want %d", n2, n)
	}
}
