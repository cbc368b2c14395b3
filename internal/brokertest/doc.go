// Package brokertest starts MQTT brokers for tests and checks that a broker
// does what edgefleet relies on.
//
// It is imported only by tests. StartMosquitto runs the system's mosquitto
// binary as a child process with a generated config; StartMochi runs the
// embedded mochi-mqtt server in process. Conformance runs the suite listed
// in Requirements against any Broker, so a broker we claim to support is
// one that passed it, not one we assumed would.
package brokertest
