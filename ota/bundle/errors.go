package bundle

import "errors"

// Sentinel errors. Every error returned by this package that a caller may act on wraps exactly one of
// these, so callers (the agent's updater, the registry, the CLI) decide with errors.Is while the
// message names the file and what differed.
var (
	// ErrSignature: manifest.sig is missing, malformed, or verifies against none of the trusted keys.
	ErrSignature = errors.New("bundle signature invalid")
	// ErrDigest: a payload's SHA-256, or one of its block digests, differs from the manifest.
	ErrDigest = errors.New("bundle digest mismatch")
	// ErrSize: a payload's size in the tar differs from the manifest.
	ErrSize = errors.New("bundle size mismatch")
	// ErrUnlisted: the tar holds a payload the manifest does not list.
	ErrUnlisted = errors.New("bundle entry not listed in manifest")
	// ErrMissing: the manifest lists a payload the tar does not hold.
	ErrMissing = errors.New("bundle entry missing")
	// ErrUnsafePath: a name that is absolute, climbs with "..", is not flat, is not UTF-8, or holds a
	// backslash, NUL or another character outside the allowed set.
	ErrUnsafePath = errors.New("bundle path unsafe")
	// ErrEntryType: a tar entry that is not a regular file (symlink, hard link, device, folder, fifo...).
	ErrEntryType = errors.New("bundle entry type not allowed")
	// ErrDuplicate: the same name twice, in the tar or in the manifest.
	ErrDuplicate = errors.New("bundle entry duplicated")
	// ErrTooLarge: a limit is exceeded, by a declared size or by the bytes actually read.
	ErrTooLarge = errors.New("bundle too large")
	// ErrTruncated: the stream ended inside an entry.
	ErrTruncated = errors.New("bundle truncated")
	// ErrFormat: not a bundle: bad tar, bad manifest JSON, bad field values, entries in the wrong order.
	ErrFormat = errors.New("bundle format invalid")
)
