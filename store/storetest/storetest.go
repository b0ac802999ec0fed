// Package storetest is the contract test suite that every store.Store implementation passes
// (the gateway and the admin endpoint must not be able to tell which store they run on). A
// store's own tests call Run with a function that opens a fresh, empty store:
//
//	func TestContract(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, fp func(string) error) store.Store {
//			s := open(t, Options{FailPoint: fp})
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// The package also offers the small helpers those tests share: a recording Watcher and a
// key maker (helpers.go). The tests themselves are grouped by concern:
// instances, keys, listing, refusals (revoke, expire), roll, invalidation, failures half-way,
// atomicity under concurrency, events, restricted keys with their updates, and rate limits and
// quotas (the key fields and the Leaser's counters).
package storetest

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/keygate/keygate/store"
)

// Opener returns a fresh, empty store whose Options.FailPoint is failPoint (which may be nil).
// It registers the store's Close with t.Cleanup.
type Opener func(t *testing.T, failPoint func(step string) error) store.Store

// Run runs the contract suite against the stores open returns. Each subtest opens its own
// store, and the subtests run in parallel: open must be safe to call concurrently.
func Run(t *testing.T, open func(t *testing.T, failPoint func(step string) error) store.Store) {
	tests := []contractTest{
		{"NewStoreIsEmptyAndAnswers", testEmpty},
		{"Instances", testInstances},
		{"CreateKeyThenGetEveryField", testCreateAndGet},
		{"LookupHash", testLookupHash},
		{"UnknownKeysAndInstances", testNotFound},
		{"CreateKeyInMissingInstanceWritesNothing", testCreateMissingInstance},
		{"ListNewestFirstInCreationOrder", testListOrder},
		{"ListPaginationBoundaries", testListPagination},
		{"ListStatusFilterWithPaging", testListStatus},
		{"ListInvalidCursorAndMissingInstance", testListErrors},
		{"ListKeepsInstancesApart", testListInstancesApart},
		{"RevokeKeyIsIdempotent", testRevoke},
		{"ExpireKeyOnlyMovesEarlier", testExpire},
		{"RollCreatesNewKeyAndExpiresOld", testRoll},
		{"RollRefusesRevokedAndExpiredKeys", testRollRefusesInactive},
		{"TouchKeyNeverMovesBack", testTouch},
		{"TouchKeysBatchNeverMovesBackIgnoresUnknownKeys", testTouchKeys},
		{"InvalidationsBeforeReturnAndUnsubscribe", testInvalidations},
		{"ConcurrentCreatesLoseNothing", testConcurrentCreates},
		{"FailedCreateLeavesNoWorkingKey", testFailedCreate},
		{"FailedRevokeNeverListedRevokedButWorking", testFailedRevoke},
		{"FailedRollLeavesNoReplacementAndOldKeyRollable", testFailedRoll},
		{"ConcurrentRollsMakeOneReplacementAndOneEvent", testConcurrentRolls},
		{"ConcurrentRevokesAgreeAndRecordOneEvent", testConcurrentRevokes},
		{"RevokeRacingRollNeverLeavesAStrayReplacement", testRevokeRacingRoll},
		{"EventsNewestFirstPagedAndBounded", testEvents},
		{"RestrictionsRoundTrip", testRestrictionsRoundTrip},
		{"UpdateKeyChangesFieldsAndRecordsThem", testUpdateKey},
		{"UpdateKeyRefusesRevokedKeyWritingNothing", testUpdateRevoked},
		{"UpdateKeyRefusesRolledKey", testUpdateRolled},
		{"UpdateKeyMovesExpiryEitherWay", testUpdateExpiry},
		{"ConcurrentUpdatesLastWriterWinsOneEventEach", testConcurrentUpdates},
		{"RollReplacementKeepsRestrictions", testRollKeepsRestrictions},
		{"LimitsRoundTrip", testLimitsRoundTrip},
		{"UpdateKeyChangesLimits", testUpdateLimits},
		{"LeaseNeverPassesTheLimitUnderConcurrency", testLeaseConcurrent},
		{"LeaseAndReleaseCounts", testLeaseAndRelease},
		{"UsedManyReadsWhatUsedReads", testUsedMany},
		{"CountersPerKeyAndName", testCountersApart},
		{"ExpiredCounterStartsAgain", testCounterExpiry},
	}
	tests = append(tests, outboxTests...)
	tests = append(tests, usageTests...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.f(newSuite(t, open))
		})
	}
}

// contractTest is one test of the suite.
type contractTest struct {
	name string
	f    func(*suite)
}

// The fail points every store calls (Options.FailPoint): after a create wrote the listed
// record and before the lookup entry, after a revoke marked the lookup entry and before the
// listed record, and after a roll claimed the old key (and listed the replacement) and
// before the replacement's lookup entry.
const (
	StepCreateListed = "create:listed"
	StepRevokeLookup = "revoke:lookup"
	StepRollClaimed  = "roll:claimed"
)

// errInjected is what the switchable fail point returns.
var errInjected = errors.New("storetest: injected failure")

// FailPoint is a switchable fail point: it fails the step it is set to, and records which
// steps the store passed through.
type FailPoint struct {
	step atomic.Pointer[string]
	mu   sync.Mutex
	seen map[string]int
}

// Fail makes the fail point return an error at step; "" switches it off.
func (f *FailPoint) Fail(step string) {
	if step == "" {
		f.step.Store(nil)
		return
	}
	f.step.Store(&step)
}

// Hook is the function to wire into a store's Options.FailPoint.
func (f *FailPoint) Hook(step string) error {
	f.mu.Lock()
	if f.seen == nil {
		f.seen = make(map[string]int)
	}
	f.seen[step]++
	f.mu.Unlock()
	if p := f.step.Load(); p != nil && *p == step {
		return fmt.Errorf("%w at %s", errInjected, step)
	}
	return nil
}

// Seen returns how many times the store reached step.
func (f *FailPoint) Seen(step string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[step]
}
