// Package spool is the agent's store-and-forward queue for telemetry: a bounded on-disk spool
// that gives every message a per-device sequence number, keeps it until the control plane
// acknowledges the highest contiguous sequence number it has committed, and accounts for every
// sequence number it ever issued (DESIGN.md, "Telemetry, drift, feedback and retraining": brokers
// drop acknowledged QoS 1 messages, so delivery is accounted end to end).
//
// It owns:
//   - sequence numbers: persisted with each append, never reused, not across restarts, kill -9,
//     failed commits or even a damaged file (seq.floor reserves them in blocks, see Quarantine);
//   - the queue: Append, Pending (in order, for sending and resending), Ack (trims up to the
//     acknowledged sequence number, clamped to the highest issued);
//   - the bounds: over MaxBytes or MaxAge the oldest windows are merged into coarser ones with the
//     caller's Merge (the telemetry code knows how to sum two histograms; the spool does not look
//     inside bodies). A merged entry lists every sequence number it stands for (Entry.Seqs). Only
//     what cannot be merged is dropped, and every drop is counted (Stats.Dropped) and kept as
//     ranges (DroppedRanges) until an ack passes them, so the next message can report them.
//     Every sequence number is therefore delivered, inside a merged entry, or reported dropped;
//   - Drainer: sending the backlog in order at a bounded rate for as long as a connection lasts.
//
// It must not: speak MQTT or know topics and wire formats (the agent's session does, and passes
// a Send func); decode or interpret bodies (Merge is supplied by the telemetry code); import
// bbolt (only agent/spool/store does, per the import rules in deps_test.go); trim anything that
// was not acknowledged.
//
// # Why bbolt rather than segment files
//
// Every change here touches several things at once: an append writes the entry and the next
// sequence number and may merge two old entries and record a drop; an ack deletes entries and
// trims drop ranges. In a bbolt transaction all of it commits atomically with one fsynced commit,
// and a kill -9 at any instant leaves the state before or after, never between. With
// write-temp-fsync-rename segment files the same guarantee needs a manifest naming the live
// segments plus ordering rules between several renames (and folder fsyncs), which is more code to
// get wrong for no gain at telemetry rates (a few messages per device per minute). bbolt is
// already the project's store; its flock also stops two agents sharing a spool folder. Its
// costs: two fsyncs per commit (see the benchmark), and a file that does not shrink (freed pages
// are reused, so it stops growing at about the bound). Records carry a CRC-32C because bbolt
// checksums only its meta pages. bbolt also trusts every page id and offset in the file, so Open
// first walks the file's structure with plain reads (ids in range, no cycles, no page both in use
// and free) and then reads every record: a damaged file becomes ErrCorrupt (or, with
// Options.Quarantine, is moved aside) instead of a panic, a fault or a hang; a bbolt panic that
// still gets through in a later transaction is returned as ErrCorrupt too.
//
// # Accounting with merged entries
//
// A merged entry is keyed and sent at its lowest sequence number and carries the exact set it
// stands for, with holes where other kinds sit between. Ack removes an entry only when all its
// sequence numbers are acknowledged. A merged entry may contain a window the control plane
// already received unacknowledged (sent, then merged while the ack was lost); the control plane
// must treat such overlap on its side (the spool cannot know what arrived past the ack).
package spool
