package storetest

import (
	"fmt"
	"slices"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

func testListOrder(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	var created []store.Key
	// 40 keys within the same millisecond, with identical CreatedAt.
	same := x.now
	for i := range 40 {
		created = append(created, x.key(in, fmt.Sprintf("same-%02d", i), same))
	}
	// Keys with later and then earlier CreatedAt: creation order decides, not CreatedAt.
	created = append(created, x.key(in, "later", same.Add(time.Hour)))
	created = append(created, x.key(in, "earlier", same.Add(-time.Hour)))
	created = append(created, x.key(in, "same-again", same))

	want := slices.Clone(created)
	slices.Reverse(want)
	keys, more, err := x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}
	if more {
		t.Errorf("hasMore = true with every key on the page")
	}
	if !slices.Equal(ids(keys), ids(want)) {
		t.Fatalf("ListKeys order:\n got %v\nwant %v (newest created first)", ids(keys), ids(want))
	}
	for i := range keys {
		checkKey(t, keys[i], want[i])
	}
	// Page by page, the same order.
	for _, limit := range []int{1, 2, 5, 40, 42, 43, 44} {
		if got := x.listAll(in.ID, limit, "", x.now); !slices.Equal(ids(got), ids(want)) {
			t.Errorf("paging by %d: got %v\nwant %v", limit, ids(got), ids(want))
		}
	}
}

func testListPagination(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Sandbox)
	empty := x.instance("empty", apikey.Sandbox)
	keys, more, err := x.s.ListKeys(x.ctx, empty.ID, store.ListOptions{Limit: 3})
	if err != nil || len(keys) != 0 || more {
		t.Errorf("ListKeys(empty instance) = %v, %v, %v; want no keys, no more", ids(keys), more, err)
	}

	var all []store.Key // newest first
	for i := range 7 {
		all = slices.Insert(all, 0, x.key(in, fmt.Sprintf("k%d", i), x.now.Add(time.Duration(i)*time.Millisecond)))
	}
	after := ""
	for i, want := range []struct {
		n    int
		more bool
	}{{3, true}, {3, true}, {1, false}} {
		keys, more, err := x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: 3, StartingAfter: after})
		if err != nil {
			t.Fatalf("page %d: %v", i, err)
		}
		wantIDs := ids(all[i*3 : i*3+want.n])
		if !slices.Equal(ids(keys), wantIDs) || more != want.more {
			t.Fatalf("page %d (after %q) = %v, hasMore %v; want %v, hasMore %v", i, after, ids(keys), more, wantIDs, want.more)
		}
		after = keys[len(keys)-1].ID
	}

	// hasMore is exact at every boundary, from every starting point.
	for start := 0; start <= len(all); start++ {
		after := ""
		if start > 0 {
			after = all[start-1].ID
		}
		for limit := 1; limit <= 9; limit++ {
			keys, more, err := x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: limit, StartingAfter: after})
			if err != nil {
				t.Fatalf("ListKeys(limit %d, after #%d): %v", limit, start, err)
			}
			rest := all[start:]
			want := rest[:min(limit, len(rest))]
			wantMore := len(rest) > limit
			if !slices.Equal(ids(keys), ids(want)) || more != wantMore {
				t.Errorf("ListKeys(limit %d, after #%d) = %v, hasMore %v; want %v, hasMore %v",
					limit, start, ids(keys), more, ids(want), wantMore)
			}
		}
	}

	_, _, err = x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: 0})
	if err == nil {
		t.Errorf("ListKeys with Limit 0: no error")
	}
}

func testListStatus(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	now := x.now
	type spec struct {
		expires time.Time
		revoke  bool
		expire  time.Time // ExpireKey after create
		want    store.Status
	}
	specs := []spec{
		{want: store.StatusActive},
		{expires: now.Add(-time.Hour), want: store.StatusExpired},
		{revoke: true, want: store.StatusRevoked},
		{expires: now.Add(time.Hour), want: store.StatusActive},
		{expires: now, want: store.StatusExpired}, // expires_at not after now: expired
		{expires: now.Add(-time.Minute), revoke: true, want: store.StatusRevoked},
		{expires: now.Add(time.Millisecond), want: store.StatusActive},
		{expire: now.Add(-time.Second), want: store.StatusExpired},
		{want: store.StatusActive},
		{expires: now.Add(time.Hour), revoke: true, want: store.StatusRevoked},
		{expire: now.Add(time.Hour), want: store.StatusActive},
		{expires: now.Add(24 * time.Hour), expire: now.Add(-time.Millisecond), want: store.StatusExpired},
	}
	var all []store.Key // newest first
	for i, sp := range specs {
		k, _ := NewKey(t, in.ID, in.Environment, fmt.Sprintf("k%02d-%s", i, sp.want), now.Add(-time.Duration(len(specs)-i)*time.Minute))
		k.ExpiresAt = sp.expires
		if err := x.s.CreateKey(x.ctx, k); err != nil {
			t.Fatalf("CreateKey: %v", err)
		}
		if sp.revoke {
			if _, _, err := x.s.RevokeKey(x.ctx, in.ID, k.ID, now.Add(-time.Second), nil); err != nil {
				t.Fatalf("RevokeKey: %v", err)
			}
		}
		if !sp.expire.IsZero() {
			if _, err := x.s.ExpireKey(x.ctx, in.ID, k.ID, sp.expire); err != nil {
				t.Fatalf("ExpireKey: %v", err)
			}
		}
		k = x.get(in.ID, k.ID)
		if st := k.Status(now); st != sp.want {
			t.Fatalf("key %d: status %s, want %s", i, st, sp.want)
		}
		all = slices.Insert(all, 0, k)
	}
	// Other keys in another instance must not show up.
	other := x.instance("other", apikey.Production)
	x.key(other, "other-active", now)

	for _, status := range []store.Status{"", store.StatusActive, store.StatusExpired, store.StatusRevoked} {
		for start := 0; start <= len(all); start++ {
			after := ""
			if start > 0 {
				after = all[start-1].ID // possibly a key of another status
			}
			var rest []store.Key
			for _, k := range all[start:] {
				if status == "" || k.Status(now) == status {
					rest = append(rest, k)
				}
			}
			for _, limit := range []int{1, 2, 3, 4, 5, 12, 13} {
				keys, more, err := x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: limit, StartingAfter: after, Status: status, Now: now})
				if err != nil {
					t.Fatalf("ListKeys(status %q, limit %d, after #%d): %v", status, limit, start, err)
				}
				want := rest[:min(limit, len(rest))]
				wantMore := len(rest) > limit
				if !slices.Equal(ids(keys), ids(want)) || more != wantMore {
					t.Errorf("ListKeys(status %q, limit %d, after #%d) = %v, hasMore %v; want %v, hasMore %v",
						status, limit, start, ids(keys), more, ids(want), wantMore)
				}
				for _, k := range keys {
					if status != "" && k.Status(now) != status {
						t.Errorf("ListKeys(status %q) returned %s with status %s", status, k.ID, k.Status(now))
					}
				}
			}
		}
		// Paging through the whole filtered list gives each matching key once.
		var want []store.Key
		for _, k := range all {
			if status == "" || k.Status(now) == status {
				want = append(want, k)
			}
		}
		for _, limit := range []int{1, 2, 3} {
			if got := x.listAll(in.ID, limit, status, now); !slices.Equal(ids(got), ids(want)) {
				t.Errorf("paging status %q by %d: got %v, want %v", status, limit, ids(got), ids(want))
			}
		}
	}
}

func testListErrors(x *suite) {
	t := x.t
	a := x.instance("a", apikey.Sandbox)
	b := x.instance("b", apikey.Sandbox)
	x.key(a, "ka", x.now)
	kb := x.key(b, "kb", x.now)
	_, _, err := x.s.ListKeys(x.ctx, a.ID, store.ListOptions{Limit: 10, StartingAfter: "key_doesnotexist"})
	wantErr(t, "ListKeys(unknown starting_after)", err, store.ErrInvalidCursor)
	_, _, err = x.s.ListKeys(x.ctx, a.ID, store.ListOptions{Limit: 10, StartingAfter: kb.ID})
	wantErr(t, "ListKeys(starting_after a key of another instance)", err, store.ErrInvalidCursor)
	_, _, err = x.s.ListKeys(x.ctx, a.ID, store.ListOptions{Limit: 10, StartingAfter: "key_doesnotexist", Status: store.StatusActive, Now: x.now})
	wantErr(t, "ListKeys(unknown starting_after, status active)", err, store.ErrInvalidCursor)
	_, _, err = x.s.ListKeys(x.ctx, "missing", store.ListOptions{Limit: 10})
	wantErr(t, "ListKeys(missing instance)", err, store.ErrInstanceNotFound)
	_, _, err = x.s.ListKeys(x.ctx, "missing", store.ListOptions{Limit: 10, StartingAfter: kb.ID})
	wantErr(t, "ListKeys(missing instance, starting_after)", err, store.ErrInstanceNotFound)
}

func testListInstancesApart(x *suite) {
	t := x.t
	a := x.instance("a", apikey.Sandbox)
	a2 := x.instance("a-2", apikey.Sandbox) // a prefix of nothing, but close in name
	b := x.instance("b", apikey.Production)
	var wantA, wantA2, wantB []string
	for i := range 10 {
		wantA = slices.Insert(wantA, 0, x.key(a, fmt.Sprintf("a%d", i), x.now).ID)
		wantA2 = slices.Insert(wantA2, 0, x.key(a2, fmt.Sprintf("a2-%d", i), x.now).ID)
		wantB = slices.Insert(wantB, 0, x.key(b, fmt.Sprintf("b%d", i), x.now).ID)
	}
	for in, want := range map[string][]string{a.ID: wantA, a2.ID: wantA2, b.ID: wantB} {
		for _, limit := range []int{3, 100} {
			got := x.listAll(in, limit, "", x.now)
			if !slices.Equal(ids(got), want) {
				t.Errorf("instance %s, paging by %d: got %v, want %v", in, limit, ids(got), want)
			}
			for _, k := range got {
				if k.Instance != in {
					t.Errorf("instance %s lists %s of instance %s", in, k.ID, k.Instance)
				}
			}
		}
	}
}
