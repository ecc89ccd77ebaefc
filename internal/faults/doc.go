// Package faults is gamerelay's fault suite: the production topology as
// real OS processes (three clustered nats-server nodes, two sequencers, two
// gateways, an archiver and a MongoDB-wire server) under load from
// WebSocket players, with crashes, drains and hangs applied one after
// another, each followed by checks of order, loss, duplicates and the
// archive. Its tests build only with the tag "faults" (`make test-faults`);
// see docs/architecture.md, "Fault suite". The suite runs one topology per
// test; nothing in it is shared between tests.
package faults
