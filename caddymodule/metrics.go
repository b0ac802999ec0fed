package caddymodule

import (
	"errors"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate/limit"
	"github.com/keygate/keygate/verify"
)

// Metrics are built once per process and registered into each config's registry, so their
// values survive reloads. No label carries key material: only result codes.
var (
	verificationsVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "keygate", Name: "verifications_total",
		Help: "API key verifications by nora_auth, by result code.",
	}, []string{"code"})
	verifications = func() (out [verify.NumCodes]prometheus.Counter) {
		for c := range out {
			out[c] = verificationsVec.WithLabelValues(verify.Code(c).String())
		}
		return out
	}()

	storeLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "keygate", Name: "store_lookup_seconds",
		Help:    "Time of one key lookup at the store (cache misses).",
		Buckets: []float64{.0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2},
	})
	invalidationLag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "keygate", Name: "invalidation_lag_seconds",
		Help:    "From a revocation's publication in Redis to its delivery to this gateway (Redis server clock).",
		Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 5},
	})

	revocationConfirm = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "keygate", Name: "revocation_confirm_seconds",
		Help:    "From a revoke, roll or update made through this admin endpoint to every live gateway's acknowledgement (or the one-second wait's end).",
		Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2},
	})

	// currentVerifier is the verifier of the latest started config, read by the cache metrics.
	currentVerifier atomic.Pointer[verify.Verifier]
	// currentFailed is the failed-attempt limiter of the latest started config (nil: off).
	currentFailed atomic.Pointer[limit.FailedAttempts]

	failedClients = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "keygate", Name: "failed_attempt_clients",
		Help: "Clients the failed-attempt limit tracks (at most its max_clients, rounded up to a multiple of 64).",
	}, func() float64 {
		if f := currentFailed.Load(); f != nil {
			return float64(f.Tracked())
		}
		return 0
	})

	statCollectors = []prometheus.Collector{
		statCounter("cache_hits_total", "Verifications answered from the positive cache.",
			func(s *verify.Stats) uint64 { return s.CacheHits.Load() }),
		statCounter("cache_misses_total", "Verifications that found no usable positive cache entry.",
			func(s *verify.Stats) uint64 { return s.CacheMisses.Load() }),
		statCounter("negative_cache_hits_total", "Unknown keys answered from the negative cache.",
			func(s *verify.Stats) uint64 { return s.NegativeHits.Load() }),
		statCounter("store_lookups_total", "Key lookups sent to the store (concurrent misses share one).",
			func(s *verify.Stats) uint64 { return s.StoreLookups.Load() }),
		statCounter("unsigned_key_verifications_total", "Keys accepted without a valid signature tag while key_signing is on (at 0, require is safe).",
			func(s *verify.Stats) uint64 { return s.UnsignedKeys.Load() }),
	}
)

func statCounter(name, help string, f func(*verify.Stats) uint64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "keygate", Name: name, Help: help},
		func() float64 {
			if v := currentVerifier.Load(); v != nil {
				return float64(f(&v.Stats))
			}
			return 0
		})
}

func registerMetrics(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range append([]prometheus.Collector{verificationsVec, storeLatency, invalidationLag, revocationConfirm, failedClients,
		webhookDeliveries, webhookOutboxDepth, usageFlushes, usagePending}, statCollectors...) {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}
