//! Corral's end-to-end tests: real master and agent processes, real QUIC connections.
//!
//! One test binary (as wasmtime's `tests/all`), with a harness module that starts the
//! `corral` binary Cargo built for this package.

mod bad_input;
mod cluster;
mod durability;
mod frameworks;
mod harness;
mod http;
mod policy;
mod tasks;
mod tls;
