//! Corral's wire protocol: the protobuf messages a master, its agents and its clients
//! exchange, and the framing that carries them over a byte stream.
//!
//! Every frame is a 4-byte big-endian length followed by one encoded [`pb::Envelope`].
//! Frames larger than the configured limit are refused before anything is allocated for
//! them. Every envelope carries the sender's [`Version`]; [`check_version`] refuses a
//! peer of another major version with an error that names both.
//!
//! ```
//! use corral_wire::{pb, envelope, encode_frame, FrameDecoder};
//!
//! let msg = envelope(pb::envelope::Body::Ping(pb::Ping { sequence: 7, payload: vec![] }));
//! let mut decoder = FrameDecoder::new(1 << 20);
//! decoder.extend(&encode_frame(&msg).unwrap());
//! let back = decoder.next_envelope().unwrap().unwrap();
//! assert_eq!(back, msg);
//! ```

// Tests unwrap freely: a panic is how a test fails.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod frame;

pub use frame::{
    encode_frame, encode_frame_into, FrameDecoder, FrameError, DEFAULT_MAX_FRAME, FRAME_HEADER,
};

/// The generated protobuf types.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/corral.v1.rs"));
}

/// The protocol version this build speaks.
pub const VERSION: Version = Version { major: 1, minor: 0 };

/// A protocol version: peers of the same major version understand each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// Incompatible changes bump this.
    pub major: u32,
    /// Compatible additions bump this.
    pub minor: u32,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Wraps a body in an envelope stamped with this build's version.
pub fn envelope(body: pb::envelope::Body) -> pb::Envelope {
    pb::Envelope {
        version: Some(pb::Version {
            major: VERSION.major,
            minor: VERSION.minor,
        }),
        body: Some(body),
    }
}

/// An error envelope with a stable code and a human message.
pub fn error_envelope(code: &str, message: impl Into<String>) -> pb::Envelope {
    envelope(pb::envelope::Body::Error(pb::Error {
        code: code.to_owned(),
        message: message.into(),
    }))
}

/// Why an envelope was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// The envelope has no version field.
    #[error("message carries no protocol version")]
    MissingVersion,
    /// The peer speaks another major version.
    #[error("peer speaks protocol version {peer}, this side speaks {ours}")]
    VersionMismatch {
        /// The peer's version.
        peer: Version,
        /// This build's version.
        ours: Version,
    },
    /// The envelope has no body, or a body this build does not know.
    #[error("message has no body this side understands")]
    UnknownBody,
}

impl ProtocolError {
    /// A stable machine-readable code for the error envelope sent to the peer.
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::MissingVersion => "missing_version",
            ProtocolError::VersionMismatch { .. } => "version_mismatch",
            ProtocolError::UnknownBody => "unknown_message",
        }
    }
}

/// Checks an envelope's version and that it has a body, returning the body.
///
/// # Errors
/// [`ProtocolError`] when the version is missing or of another major version, or the
/// body is absent (which is also how a body from a newer minor version decodes).
pub fn check_version(env: pb::Envelope) -> Result<pb::envelope::Body, ProtocolError> {
    let v = env.version.ok_or(ProtocolError::MissingVersion)?;
    if v.major != VERSION.major {
        return Err(ProtocolError::VersionMismatch {
            peer: Version {
                major: v.major,
                minor: v.minor,
            },
            ours: VERSION,
        });
    }
    env.body.ok_or(ProtocolError::UnknownBody)
}

impl pb::TaskState {
    /// Whether no further state can follow this one.
    pub fn is_terminal(self) -> bool {
        use pb::TaskState::*;
        matches!(
            self,
            TaskFinished | TaskFailed | TaskKilled | TaskLost | TaskError | TaskDropped | TaskGone
        )
    }

    /// The name Mesos operators know, for example `TASK_RUNNING`.
    pub fn name(self) -> &'static str {
        self.as_str_name()
    }
}

impl pb::TaskStatus {
    /// Whether its state is a known one that no further state can follow.
    pub fn is_terminal(&self) -> bool {
        pb::TaskState::try_from(self.state).is_ok_and(pb::TaskState::is_terminal)
    }

    /// Its state's name (`TASK_RUNNING`), or `unknown` for a number no state has.
    pub fn state_name(&self) -> &'static str {
        pb::TaskState::try_from(self.state).map_or("unknown", pb::TaskState::name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_mismatch_names_both_versions() {
        let mut env = envelope(pb::envelope::Body::Ping(pb::Ping::default()));
        env.version = Some(pb::Version { major: 2, minor: 3 });
        let err = check_version(env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "peer speaks protocol version 2.3, this side speaks 1.0"
        );
    }

    #[test]
    fn missing_version_and_body_are_refused() {
        let env = pb::Envelope {
            version: None,
            body: Some(pb::envelope::Body::Ping(pb::Ping::default())),
        };
        assert_eq!(check_version(env), Err(ProtocolError::MissingVersion));
        let mut env = envelope(pb::envelope::Body::Ping(pb::Ping::default()));
        env.body = None;
        assert_eq!(check_version(env), Err(ProtocolError::UnknownBody));
    }
}
