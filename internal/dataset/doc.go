// Package dataset is what the agent and the control plane share about captured samples: the
// sample record (one JSON line per inference: inputs and outputs in the Open Inference Protocol's
// tensor shape), the upload manifest and its per-block acknowledgements, age encryption of
// capture files, and the .npy writer a training job reads.
//
// A capture file is the JSON lines of its samples encrypted with age (filippo.io/age, X25519) to
// two recipients: the device's own identity (DATA/capture.key, so an interrupted upload can
// resume after a restart) and the control plane's (DATA/dataset.key). The ciphertext is what the
// device keeps, what travels in blocks, and what the control plane stores: samples are never in
// clear at rest on either side nor on the broker.
package dataset
