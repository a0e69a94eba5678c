//! Corral's QUIC transport: cluster CA, TLS, framed streams.
