// Package hist owns the histograms telemetry is made of: a concurrency-safe latency histogram on
// fixed log-spaced buckets (Latency, with its JSON-able, mergeable Snapshot), and a histogram on
// caller-given bin edges (Fixed) that drift windows use as their quantile sketch.
//
// Both layouts are fixed in advance rather than adaptive (no t-digest, no KLL): two histograms of
// the same layout merge by adding counts, exactly and associatively, which is what a fleet
// aggregate and a spool that folds old windows into coarser ones need. For drift the edges come
// from the bundle's reference, so the device's sketch and the reference share their bins and the
// binned CDFs compare directly (see package drift for what that costs the KS statistic).
//
// It is pure arithmetic: no I/O, no clock, no knowledge of MQTT, HTTP or the agent.
package hist
