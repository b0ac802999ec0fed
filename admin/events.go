package admin

import (
	"net/http"
	"time"

	"github.com/keygate/keygate/store"
)

// Event is the API's event object.
type Event struct {
	Object   string `json:"object"`
	ID       string `json:"id"`
	Type     string `json:"type"`
	Instance string `json:"instance"`
	KeyID    string `json:"key_id"`
	NewKeyID string `json:"new_key_id,omitempty"`
	// Fields are the names of the fields an api_key.updated changed (absent otherwise).
	Fields []string `json:"fields,omitempty"`
	// URL and Source say where an api_key.leaked key was found (absent otherwise).
	URL       string    `json:"url,omitempty"`
	Source    string    `json:"source,omitempty"`
	Actor     string    `json:"actor"`
	CreatedAt time.Time `json:"created_at"`
}

// EventObject is the API's event object for e (as the events list and webhook deliveries
// show it).
func EventObject(e store.Event) Event {
	return Event{Object: "event", ID: e.ID, Type: e.Type, Instance: e.Instance,
		KeyID: e.KeyID, NewKeyID: e.NewKeyID, Fields: e.Fields, URL: e.URL, Source: e.Source, Actor: e.Actor,
		CreatedAt: e.CreatedAt.UTC()}
}

func (a *API) listEvents(w http.ResponseWriter, r *http.Request, t *Token) error {
	instance, _, err := pathIDs(r)
	if err != nil {
		return err
	}
	opt, err := listOptions(r, false)
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	events, more, err := a.Store.ListEvents(ctx, instance, opt)
	if err != nil {
		return err
	}
	out := List[Event]{Object: "list", Data: make([]Event, 0, len(events)), HasMore: more}
	for _, e := range events {
		out.Data = append(out.Data, EventObject(e))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
