package storetest

// outboxTests are the webhook outbox's tests (store.Outbox).
var outboxTests = []contractTest{}
