package storetest

import (
	"slices"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

func testEmpty(x *suite) {
	t := x.t
	if err := x.s.Ping(x.ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	ins, err := x.s.Instances(x.ctx)
	if err != nil {
		t.Fatalf("Instances: %v", err)
	}
	if len(ins) != 0 {
		t.Fatalf("a fresh store has instances: %v", ins)
	}
}

func testInstances(x *suite) {
	t := x.t
	want := []store.Instance{
		{ID: "acme-prod", Name: "Acme (production)", Environment: apikey.Production},
		{ID: "acme-sandbox", Name: "Acme (sandbox) ✓", Environment: apikey.Sandbox},
		{ID: "beta_1", Name: "Beta", Environment: apikey.Sandbox},
		{ID: "zeta", Name: "Zeta", Environment: apikey.Production},
	}
	for _, i := range []int{3, 1, 0, 2} { // not in id order
		if err := x.s.CreateInstance(x.ctx, want[i]); err != nil {
			t.Fatalf("CreateInstance(%s): %v", want[i].ID, err)
		}
	}
	for _, in := range want {
		got, err := x.s.Instance(x.ctx, in.ID)
		if err != nil {
			t.Fatalf("Instance(%s): %v", in.ID, err)
		}
		if got != in {
			t.Errorf("Instance(%s) = %+v, want %+v", in.ID, got, in)
		}
	}
	got, err := x.s.Instances(x.ctx)
	if err != nil {
		t.Fatalf("Instances: %v", err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("Instances = %+v, want (ordered by id) %+v", got, want)
	}

	dup := store.Instance{ID: "beta_1", Name: "Other name", Environment: apikey.Production}
	wantErr(t, "CreateInstance of an existing id", x.s.CreateInstance(x.ctx, dup), store.ErrInstanceExists)
	if got, err := x.s.Instance(x.ctx, "beta_1"); err != nil || got != want[2] {
		t.Errorf("after a refused duplicate, Instance(beta_1) = %+v, %v; want it unchanged %+v", got, err, want[2])
	}
	if got, _ := x.s.Instances(x.ctx); len(got) != len(want) {
		t.Errorf("after a refused duplicate, %d instances, want %d", len(got), len(want))
	}

	_, err = x.s.Instance(x.ctx, "missing")
	wantErr(t, "Instance(missing)", err, store.ErrInstanceNotFound)
}
