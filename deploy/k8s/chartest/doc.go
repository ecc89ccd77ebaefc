// Package chartest tests the gamerelay Helm chart and the files generated
// from it (deploy/k8s): helm lint and template over several value sets, strict
// decoding of every rendered object into the Kubernetes API types, policy
// checks (resources, probes, security context, PDBs, drain timing, secrets by
// reference), the generated manifests, alert rules and dashboard.
//
// It is a module of its own so k8s.io/api stays out of the main module. The
// tests run helm from $HELM (set by `make test-k8s`) or bin/tools. They share
// no state and are safe to run in parallel.
package chartest
