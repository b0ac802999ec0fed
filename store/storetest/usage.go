package storetest

// usageTests are the usage counts' tests (store.UsageStore).
var usageTests = []contractTest{}
