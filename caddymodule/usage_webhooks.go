package caddymodule

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/usage"
	"github.com/keygate/keygate/webhook"
)

// WebhookConfig is a receiver of the audit events: each event of a listed type is POSTed
// to URL, signed with Secret (see package webhook), at least once.
type WebhookConfig struct {
	// URL receives the deliveries (http:// or https://). Takes {env.*}.
	URL string `json:"url"`
	// Secret signs them (at least 16 characters). Takes {env.*}.
	Secret string `json:"secret"`
	// Events are the event types delivered; every type when empty.
	Events []string `json:"events,omitempty"`
}

// UsageConfig tunes the usage counts, which are on by default.
type UsageConfig struct {
	// Off stops counting (the usage endpoints then answer only what was counted before).
	Off bool `json:"off,omitempty"`
	// FlushInterval is how often each gateway adds its counts to the store (default 5s, at
	// most 15s).
	FlushInterval caddy.Duration `json:"flush_interval,omitempty"`
}

var (
	webhookDeliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "keygate", Name: "webhook_deliveries_total",
		Help: "Webhook delivery attempts by webhook id (a hash of its URL) and result: delivered, failed (retried later) or dropped (given up).",
	}, []string{"webhook", "result"})
	webhookOutboxDepth = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "keygate", Name: "webhook_outbox_depth",
		Help: "Events waiting in a webhook's outbox (every instance), by webhook id; sampled every 10 s.",
	}, []string{"webhook"})
	usageFlushes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "keygate", Name: "usage_flushes_total",
		Help: "Flushes of this gateway's usage counts to the store, by result (ok or error).",
	}, []string{"result"})
	usagePending = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "keygate", Name: "usage_pending_counts",
		Help: "Usage counts (one per key and minute) kept in memory because the store did not take them.",
	})
)

// provisionWebhooks resolves the webhooks' placeholders and checks them.
func (a *App) provisionWebhooks(repl *caddy.Replacer) ([]webhook.Webhook, error) {
	var out []webhook.Webhook
	seen := map[string]bool{}
	for i, wc := range a.Webhooks {
		w := webhook.Webhook{URL: repl.ReplaceKnown(wc.URL, ""), Secret: repl.ReplaceKnown(wc.Secret, ""), Events: wc.Events}
		if w.Secret == "" {
			return nil, fmt.Errorf("webhook %d (%s): its secret is not set (it resolved empty); set it, e.g. export NORA_WEBHOOK_SECRET=$(openssl rand -hex 32)", i+1, w.Redacted())
		}
		if err := w.Check(); err != nil {
			return nil, fmt.Errorf("webhook %d (%s): %v", i+1, w.Redacted(), err)
		}
		if seen[w.URL] {
			return nil, fmt.Errorf("webhook %s given twice", w.Redacted())
		}
		seen[w.URL] = true
		out = append(out, w)
	}
	return out, nil
}

// usageInterval is the flush interval of a UsageConfig (nil: defaults).
func usageInterval(c *UsageConfig) (time.Duration, error) {
	if c == nil || c.FlushInterval == 0 {
		return usage.DefaultInterval, nil
	}
	d := time.Duration(c.FlushInterval)
	if d < 100*time.Millisecond || d > 15*time.Second {
		return 0, errors.New("usage flush_interval must be from 100ms to 15s")
	}
	return d, nil
}

// usageResource is the process' usage counter for one store, and its flusher; pooled so a
// reload keeps what was counted.
type usageResource struct {
	interval time.Duration
	logger   *zap.Logger
	counter  *usage.Counter
	mu       sync.Mutex
	flusher  *usage.Flusher
}

func (r *usageResource) start(s store.Store) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.flusher != nil {
		return
	}
	r.flusher = usage.StartFlusher(r.counter, s, usage.FlusherOptions{Interval: r.interval, Logger: r.logger,
		OnFlush: func(_, pending int, err error) {
			result := "ok"
			if err != nil {
				result = "error"
			}
			usageFlushes.WithLabelValues(result).Inc()
			usagePending.Set(float64(pending))
		}})
}

// Destruct implements caddy.Destructor: a last flush, then the flusher stops.
func (r *usageResource) Destruct() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.flusher != nil {
		r.flusher.Close()
		r.flusher = nil
	}
	return nil
}

// webhookResource is the process' deliverer for one store and one set of webhooks.
type webhookResource struct {
	hooks  []webhook.Webhook
	logger *zap.Logger
	mu     sync.Mutex
	d      *webhook.Deliverer
}

func (r *webhookResource) start(s store.Store) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.d != nil {
		return nil
	}
	d, err := webhook.Start(s, r.hooks, webhook.Options{
		Logger: r.logger,
		OnResult: func(id, result string, _ time.Duration) {
			webhookDeliveries.WithLabelValues(id, result).Inc()
		},
		OnDepth: func(id string, n int64) { webhookOutboxDepth.WithLabelValues(id).Set(float64(n)) },
	})
	if err != nil {
		return err
	}
	r.d = d
	return nil
}

// Destruct implements caddy.Destructor.
func (r *webhookResource) Destruct() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.d != nil {
		r.d.Close()
		r.d = nil
	}
	return nil
}

// provisionUsageAndWebhooks takes this config's usage counter and deliverer from the pool.
func (a *App) provisionUsageAndWebhooks(repl *caddy.Replacer) error {
	a.usage = new(atomic.Pointer[usage.Counter])
	hooks, err := a.provisionWebhooks(repl)
	if err != nil {
		return err
	}
	if len(hooks) > 0 {
		if a.webhookKey, err = poolKey("webhooks", struct {
			S string
			H []webhook.Webhook
		}{a.storeKey, hooks}); err != nil {
			return err
		}
		v, _, err := pool.LoadOrNew(a.webhookKey, func() (caddy.Destructor, error) {
			return &webhookResource{hooks: hooks, logger: a.logger.Named("webhook")}, nil
		})
		if err != nil {
			return err
		}
		a.webhookRes = v.(*webhookResource)
	}
	if a.Usage != nil && a.Usage.Off {
		return nil
	}
	interval, err := usageInterval(a.Usage)
	if err != nil {
		return err
	}
	if a.usageKey, err = poolKey("usage", struct {
		S string
		I time.Duration
	}{a.storeKey, interval}); err != nil {
		return err
	}
	v, _, err := pool.LoadOrNew(a.usageKey, func() (caddy.Destructor, error) {
		return &usageResource{interval: interval, logger: a.logger.Named("usage"), counter: usage.NewCounter(nil)}, nil
	})
	if err != nil {
		return err
	}
	a.usageRes = v.(*usageResource)
	return nil
}

// startUsageAndWebhooks starts the flusher and the deliverer once the store is open.
func (a *App) startUsageAndWebhooks(s store.Store) error {
	if a.usageRes != nil {
		a.usageRes.start(s)
		a.usage.Store(a.usageRes.counter)
	}
	if a.webhookRes != nil {
		if err := a.webhookRes.start(s); err != nil {
			return fmt.Errorf("webhooks: %v", err)
		}
	}
	return nil
}

// usageCounter returns the counter requests are counted in (nil: usage is off, or the app
// has not started).
func (a *App) usageCounter() *usage.Counter {
	if a.usage == nil {
		return nil
	}
	return a.usage.Load()
}

// appUsage is embedded in App: the usage counter nora_auth reads lock-free.
type appUsage struct {
	usage      *atomic.Pointer[usage.Counter] // set in Provision (App is copied by value before)
	usageRes   *usageResource
	usageKey   string
	webhookRes *webhookResource
	webhookKey string
}
