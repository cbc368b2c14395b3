// Package drift owns the drift reference of a bundle (reference.json: its schema, building and
// validation), the window summaries a device accumulates against it, and the scores and
// sample-size-aware decisions that compare a window with the reference, or a canary cohort with
// its baseline (PSI, Jensen-Shannon distance, binned two-sample KS, chi-square homogeneity).
//
// The schema is documented in SCHEMA.md beside this file, and the measured false-alarm rate,
// power and detection delay in RESULTS.md.
//
// It is pure arithmetic over values the caller hands it: it reads no files (but testdata in
// tests), keeps no clock, runs no goroutines and knows nothing of MQTT, HTTP, the spool or ONNX
// Runtime. The agent extracts feature values from tensors with FeatureSpec.Extract and feeds a
// Window; the control plane merges Summaries and scores them.
package drift
