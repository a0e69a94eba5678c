//! Corral's transport: QUIC (quinn) with TLS 1.3 (rustls, ring provider), a cluster CA
//! made on the master's first start, and length-delimited protobuf frames on streams.
//!
//! The master owns a cluster CA ([`pki::MasterIdentity`]); it signs the master's own
//! certificate, which names [`SERVER_NAME`]. Agents and clients trust that CA through its
//! PEM file and connect with [`connect`]. Each conversation is a bidirectional stream
//! carrying [`pb::Envelope`](corral_wire::pb::Envelope) frames through [`FramedSend`] and
//! [`FramedRecv`], which enforce the frame size limit and the protocol version.

mod endpoint;
mod framed;
pub mod pki;

pub use endpoint::{client_endpoint, connect, server_endpoint, ALPN, SERVER_NAME};
pub use framed::{open_stream, FramedRecv, FramedSend};

use std::net::SocketAddr;

/// Everything that can go wrong on the wire.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A certificate or key could not be made, read or written.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// The TLS configuration was refused.
    #[error("tls configuration: {0}")]
    Tls(String),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// Address tried.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// No connection could be made.
    #[error("cannot reach the master at {addr}: {reason}")]
    Connect {
        /// Address tried.
        addr: SocketAddr,
        /// Cause, for a person.
        reason: String,
    },
    /// The peer sent nothing (not even a QUIC acknowledgement) for too long: it is gone,
    /// even if no packet has said so yet.
    #[error("the master at {addr} sent nothing for {silent_ms} ms")]
    Silent {
        /// The peer.
        addr: SocketAddr,
        /// How long it was silent.
        silent_ms: u64,
    },
    /// An established connection failed.
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing to a stream failed.
    #[error("write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading from a stream failed.
    #[error("read failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// The peer sent bytes that are not a valid frame.
    #[error(transparent)]
    Frame(#[from] corral_wire::FrameError),
    /// The peer sent a valid frame this side refuses.
    #[error(transparent)]
    Protocol(#[from] corral_wire::ProtocolError),
    /// The peer answered with an error envelope.
    #[error("peer refused: {message} ({code})")]
    Remote {
        /// Stable code.
        code: String,
        /// What the peer said.
        message: String,
    },
}

impl TransportError {
    /// The error envelope to send the peer before closing, for errors the peer caused.
    pub fn to_envelope(&self) -> Option<corral_wire::pb::Envelope> {
        match self {
            TransportError::Frame(e) => Some(corral_wire::error_envelope(e.code(), e.to_string())),
            TransportError::Protocol(e) => {
                Some(corral_wire::error_envelope(e.code(), e.to_string()))
            }
            _ => None,
        }
    }
}
