package admin

import (
	"net/http"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// Instance is the API's instance object.
type Instance struct {
	Object      string `json:"object"`
	ID          string `json:"id"`
	Name        string `json:"name"`
	Environment string `json:"environment"`
}

func instanceJSON(in store.Instance) Instance {
	return Instance{Object: "instance", ID: in.ID, Name: in.Name, Environment: in.Environment.String()}
}

// List is the API's list object.
type List[T any] struct {
	Object  string `json:"object"`
	Data    []T    `json:"data"`
	HasMore bool   `json:"has_more"`
}

func (a *API) listInstances(w http.ResponseWriter, r *http.Request, t *Token) error {
	ctx, cancel := a.ctx(r)
	defer cancel()
	all, err := a.Store.Instances(ctx)
	if err != nil {
		return err
	}
	out := List[Instance]{Object: "list", Data: []Instance{}}
	for _, in := range all {
		if t.Covers(in.ID) {
			out.Data = append(out.Data, instanceJSON(in))
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) createInstance(w http.ResponseWriter, r *http.Request, t *Token) error {
	var body struct {
		ID          *string `json:"id"`
		Name        *string `json:"name"`
		Environment *string `json:"environment"`
	}
	if err := decode(w, r, &body); err != nil {
		return err
	}
	if body.ID == nil || !store.ValidInstanceID(*body.ID) {
		return errInvalid("id is required and must match [a-z0-9][a-z0-9_-]{0,62}.")
	}
	if body.Name == nil {
		return errInvalid("name is required.")
	}
	if err := checkName("name", *body.Name); err != nil {
		return err
	}
	if body.Environment == nil {
		return errInvalid(`environment is required: "sandbox" or "production".`)
	}
	env, err := apikey.ParseEnvironment(*body.Environment)
	if err != nil {
		return errInvalid(`environment must be "sandbox" or "production".`)
	}
	if !t.Covers(*body.ID) {
		return errForbidden("This token may not act on this instance.")
	}
	in := store.Instance{ID: *body.ID, Name: *body.Name, Environment: env}
	ctx, cancel := a.ctx(r)
	defer cancel()
	if err := a.Store.CreateInstance(ctx, in); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, instanceJSON(in))
	return nil
}
