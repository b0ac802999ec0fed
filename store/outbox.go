package store

import (
	"context"
	"time"
)

// Webhook deliveries. Package webhook POSTs audit events to the configured URLs; the store
// keeps what survives the gateways: for each webhook (named by an id the deliverer derives
// from its URL) an outbox of the events still to deliver, fed from the instances' audit
// trails, so that every event recorded by any path (the admin API, secret scanning, …) and
// by any gateway is delivered, and a gateway that dies hands its pending deliveries to
// another.
//
// Per webhook and instance the store keeps a cursor in the trail: ClaimOutbox first moves the
// events recorded after it into the outbox (with a copy of each event, so that trimming the
// trail loses nothing already moved), then claims the outbox's due items. A claim makes an
// item due again after a lease: a claimer that dies before settling it leaves it to the next
// claim (delivery is at least once); of concurrent claims, one gets each item. Times that
// decide what is due are the store's own clock (Redis' TIME), so gateways' clocks may differ.

// OutboxItem is a claimed delivery.
type OutboxItem struct {
	Event Event
	// Attempts is how many claims of this item came before this one (0: first attempt).
	Attempts int
	// QueuedAt is when the event entered the outbox (store clock, millisecond precision).
	QueuedAt time.Time
}

// Outbox keeps the webhooks' deliveries. Every Store implements it.
type Outbox interface {
	// RegisterWebhook makes webhook receive the events recorded from now on. Its first call
	// for a webhook marks every instance's trail at its current end (events recorded before
	// are never delivered to it); later calls change nothing. Instances created afterwards
	// deliver from their first event.
	RegisterWebhook(ctx context.Context, webhook string) error
	// ClaimOutbox moves the events of instance recorded since the last move into webhook's
	// outbox, keeping only those whose Type is in types (every type when types is empty; the
	// others are passed over for good), then claims up to max items of that instance's
	// outbox that are due, oldest first: each is due again after lease unless settled
	// first, and its attempt count grows by one. A webhook that was never registered, or an
	// instance that does not exist, claims nothing (no error).
	ClaimOutbox(ctx context.Context, webhook, instance string, types []string, max int, lease time.Duration) ([]OutboxItem, error)
	// AckOutbox removes an item from the outbox: delivered, or given up. Removing an item
	// that is not there is not an error.
	AckOutbox(ctx context.Context, webhook, instance, eventID string) error
	// RetryOutbox makes a claimed item due again after delay (0: at once).
	RetryOutbox(ctx context.Context, webhook, instance, eventID string, delay time.Duration) error
	// OutboxDepth counts the items in webhook's outbox over every instance: the events
	// moved into it and not yet acknowledged (those recorded since the last claim are moved
	// by the next one, and not counted until then).
	OutboxDepth(ctx context.Context, webhook string) (int64, error)
	// WatchEvents calls f, in this process, with the instance of every audit event this
	// store handle records (after it is stored), until the returned function is called. f
	// must not block: the deliverer uses it to claim at once instead of at its next poll.
	WatchEvents(f func(instance string)) (stop func())
}
