// Package plan defines the Execution Plan: the explicit, schema-validated
// set of decisions the engine runs a model under.
//
// A plan as written by a user (or an agent) leaves most fields out. Validate
// checks it against the JSON Schema generated from the Go types (Schema) plus
// the rules a schema cannot express, and returns every problem with the JSON
// pointer of the field at fault. Check adds the rules that depend on the host
// (CPUs, AVX2, power capping). Resolve then turns plan + model + host into a
// Resolved plan in which every default is written out, every per-tensor
// quantization decision is listed with its reason, the kernel set is named,
// and the whole is identified by a canonical hash. Nothing is decided later
// and nothing is decided implicitly: the engine only executes a Resolved plan.
//
// Store keeps named, versioned plans in a directory; Diff compares two plans
// field by field.
package plan

//go:generate go run ./internal/schemagen/genschema -o plan.schema.json
