//! Length-delimited framing with a size limit.

use bytes::{Buf, BufMut, BytesMut};
use prost::Message;

use crate::pb;

/// Bytes of the length prefix before every frame.
pub const FRAME_HEADER: usize = 4;

/// The default largest frame a peer may send: 4 MiB.
pub const DEFAULT_MAX_FRAME: usize = 4 << 20;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The peer announced a frame over the limit.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The announced size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The frame's bytes are not a valid envelope.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({have} of {want} bytes)")]
    Truncated {
        /// Bytes received.
        have: usize,
        /// Bytes the header announced (plus the header).
        want: usize,
    },
}

impl FrameError {
    /// A stable machine-readable code for the error envelope sent to the peer.
    pub fn code(&self) -> &'static str {
        match self {
            FrameError::TooLarge { .. } => "frame_too_large",
            FrameError::Malformed(_) => "malformed",
            FrameError::Truncated { .. } => "truncated",
        }
    }
}

/// Encodes one envelope as a frame.
///
/// # Errors
/// [`FrameError::TooLarge`] when the encoding does not fit a 32-bit length.
pub fn encode_frame(env: &pb::Envelope) -> Result<BytesMut, FrameError> {
    let mut buf = BytesMut::with_capacity(FRAME_HEADER + env.encoded_len());
    encode_frame_into(env, &mut buf)?;
    Ok(buf)
}

/// Appends one envelope's frame to `buf` (frames for one write, back to back).
///
/// # Errors
/// As [`encode_frame`].
pub fn encode_frame_into(env: &pb::Envelope, buf: &mut BytesMut) -> Result<(), FrameError> {
    let len = env.encoded_len();
    let size = u32::try_from(len).map_err(|_| FrameError::TooLarge {
        size: len,
        limit: u32::MAX as usize,
    })?;
    buf.reserve(FRAME_HEADER + len);
    buf.put_u32(size);
    env.encode(buf)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    Ok(())
}

/// Splits a byte stream into envelopes.
///
/// Feed it bytes with [`extend`](Self::extend) and take envelopes with
/// [`next_envelope`](Self::next_envelope) until it returns `Ok(None)`. It holds at most one
/// frame beyond what it has returned, and refuses an oversized frame from its header alone.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame: usize,
}

impl FrameDecoder {
    /// A decoder that refuses frames over `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_frame,
        }
    }

    /// Appends bytes received from the peer.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// How many more bytes the next frame needs before it can be decoded; 0 when one is ready
    /// or the header itself is incomplete.
    pub fn wanted(&self) -> usize {
        if self.buf.len() < FRAME_HEADER {
            return FRAME_HEADER - self.buf.len();
        }
        let len = self.peek_len();
        (FRAME_HEADER + len).saturating_sub(self.buf.len())
    }

    fn peek_len(&self) -> usize {
        let mut header = [0u8; FRAME_HEADER];
        header.copy_from_slice(&self.buf[..FRAME_HEADER]);
        u32::from_be_bytes(header) as usize
    }

    /// Decodes the next complete envelope, if one has arrived.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] as soon as a header announces an oversized frame, and
    /// [`FrameError::Malformed`] when a complete frame is not a valid envelope. Either is
    /// final for the stream: the caller should report it and close.
    pub fn next_envelope(&mut self) -> Result<Option<pb::Envelope>, FrameError> {
        if self.buf.len() < FRAME_HEADER {
            return Ok(None);
        }
        let len = self.peek_len();
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                size: len,
                limit: self.max_frame,
            });
        }
        if self.buf.len() < FRAME_HEADER + len {
            return Ok(None);
        }
        self.buf.advance(FRAME_HEADER);
        let frame = self.buf.split_to(len);
        pb::Envelope::decode(frame.freeze())
            .map(Some)
            .map_err(|e| FrameError::Malformed(e.to_string()))
    }

    /// Call when the stream has ended: an error if it ended inside a frame.
    ///
    /// # Errors
    /// [`FrameError::Truncated`] when bytes of an unfinished frame remain.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let want = if self.buf.len() < FRAME_HEADER {
            FRAME_HEADER
        } else {
            FRAME_HEADER + self.peek_len()
        };
        Err(FrameError::Truncated {
            have: self.buf.len(),
            want,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{envelope, pb::envelope::Body};
    use proptest::prelude::*;

    fn ping(seq: u64, payload: Vec<u8>) -> pb::Envelope {
        envelope(Body::Ping(pb::Ping {
            sequence: seq,
            payload,
        }))
    }

    #[test]
    fn oversized_header_is_refused_before_the_body_arrives() {
        let mut d = FrameDecoder::new(16);
        d.extend(&1000u32.to_be_bytes());
        assert_eq!(
            d.next_envelope(),
            Err(FrameError::TooLarge {
                size: 1000,
                limit: 16
            })
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let mut d = FrameDecoder::new(1024);
        let garbage = [0xffu8; 12];
        d.extend(&(garbage.len() as u32).to_be_bytes());
        d.extend(&garbage);
        assert!(matches!(d.next_envelope(), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn truncated_stream_is_reported() {
        let frame = encode_frame(&ping(1, vec![1, 2, 3])).unwrap();
        let mut d = FrameDecoder::new(1024);
        d.extend(&frame[..frame.len() - 2]);
        assert_eq!(d.next_envelope(), Ok(None));
        assert_eq!(
            d.finish(),
            Err(FrameError::Truncated {
                have: frame.len() - 2,
                want: frame.len()
            })
        );
    }

    proptest! {
        #[test]
        fn frames_round_trip_across_any_split(
            msgs in proptest::collection::vec((any::<u64>(), proptest::collection::vec(any::<u8>(), 0..200)), 1..8),
            chunk in 1usize..64,
        ) {
            let envs: Vec<_> = msgs.into_iter().map(|(s, p)| ping(s, p)).collect();
            let mut bytes = Vec::new();
            for e in &envs { bytes.extend_from_slice(&encode_frame(e).unwrap()); }
            let mut d = FrameDecoder::new(1 << 20);
            let mut out = Vec::new();
            for c in bytes.chunks(chunk) {
                d.extend(c);
                while let Some(e) = d.next_envelope().unwrap() { out.push(e); }
            }
            prop_assert_eq!(out, envs);
            prop_assert!(d.finish().is_ok());
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut d = FrameDecoder::new(256);
            d.extend(&data);
            for _ in 0..64 {
                match d.next_envelope() { Ok(Some(_)) => continue, _ => break }
            }
            let _ = d.finish();
        }
    }
}
