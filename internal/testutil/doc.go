// Package testutil holds helpers shared by gamerelay's tests. It is for
// tests only: test files and test fixtures (gateway/httpapi/httpapitest,
// the cluster of internal/embednats) use it; the gamerelay binary never
// calls it. Its functions fail the test with t.Fatalf, so like t.FailNow
// they run on the goroutine running the test, never on one it started.
package testutil
