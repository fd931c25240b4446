//! Authentication services: who a connection is (issue 17).
//!
//! Owner: per connection, on the shard that accepted it; the settings are built once by
//! `Config::build` and shared read-only. Nothing here awaits or does I/O: the protocol front
//! (`kafka::sasl_authenticate`) feeds client tokens in and sends the answers out.
//!
//! `sasl` is SASL on a SASL_PLAINTEXT listener (PLAIN, SCRAM-SHA-256/512, OAUTHBEARER with
//! unsecured JWS). TLS is not here yet.

pub mod sasl;
