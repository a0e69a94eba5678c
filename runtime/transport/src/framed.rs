//! Envelope frames on QUIC streams.

use corral_wire::{check_version, encode_frame, encode_frame_into, pb, FrameDecoder};

use crate::TransportError;

/// The sending half of a stream, one envelope per frame.
#[derive(Debug)]
pub struct FramedSend {
    inner: quinn::SendStream,
}

impl FramedSend {
    /// Wraps a QUIC send stream.
    pub fn new(inner: quinn::SendStream) -> Self {
        Self { inner }
    }

    /// Sends one envelope.
    ///
    /// # Errors
    /// [`TransportError`] when the stream or connection has failed.
    pub async fn send(&mut self, env: &pb::Envelope) -> Result<(), TransportError> {
        let frame = encode_frame(env)?;
        self.inner.write_all(&frame).await?;
        Ok(())
    }

    /// Sends envelopes, one frame each, in one write.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_many(&mut self, envs: &[pb::Envelope]) -> Result<(), TransportError> {
        let mut buf = bytes::BytesMut::new();
        for env in envs {
            encode_frame_into(env, &mut buf)?;
        }
        self.inner.write_all(&buf).await?;
        Ok(())
    }

    /// Sends a body wrapped in an envelope of this build's version.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_body(&mut self, body: pb::envelope::Body) -> Result<(), TransportError> {
        self.send(&corral_wire::envelope(body)).await
    }

    /// Writes raw bytes, bypassing framing: for tests of hostile peers.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        self.inner.write_all(bytes).await?;
        Ok(())
    }

    /// Ends the stream cleanly.
    pub fn finish(&mut self) {
        let _ = self.inner.finish();
    }

    /// Waits for `work`, unless the peer stops reading this stream (or the connection is
    /// lost) first: then `None`. For a stream that relays something slow, such as a
    /// followed log, so that a reader gone away ends the relay even while nothing comes.
    pub async fn unless_stopped<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            out = work => Some(out),
            _ = self.inner.stopped() => None,
        }
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut quinn::SendStream {
        &mut self.inner
    }
}

/// The receiving half of a stream: decodes frames within the size limit.
#[derive(Debug)]
pub struct FramedRecv {
    inner: quinn::RecvStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl FramedRecv {
    /// Wraps a QUIC receive stream, refusing frames over `max_frame` bytes.
    pub fn new(inner: quinn::RecvStream, max_frame: usize) -> Self {
        Self {
            inner,
            decoder: FrameDecoder::new(max_frame),
            buf: vec![0; 64 * 1024],
        }
    }

    /// Receives the next envelope, unchecked; `Ok(None)` when the peer finished cleanly.
    ///
    /// # Errors
    /// [`TransportError::Frame`] for oversized, malformed or truncated frames, and the
    /// stream's own errors.
    pub async fn recv_envelope(&mut self) -> Result<Option<pb::Envelope>, TransportError> {
        loop {
            if let Some(env) = self.decoder.next_envelope()? {
                return Ok(Some(env));
            }
            match self.inner.read(&mut self.buf).await? {
                Some(n) => self.decoder.extend(&self.buf[..n]),
                None => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
            }
        }
    }

    /// Receives the next message body, checking its protocol version. An error envelope
    /// from the peer becomes [`TransportError::Remote`].
    ///
    /// # Errors
    /// As [`recv_envelope`](Self::recv_envelope), plus [`TransportError::Protocol`] for a
    /// version mismatch or an unknown body.
    pub async fn recv(&mut self) -> Result<Option<pb::envelope::Body>, TransportError> {
        match self.recv_envelope().await? {
            None => Ok(None),
            Some(env) => match check_version(env)? {
                pb::envelope::Body::Error(e) => Err(TransportError::Remote {
                    code: e.code,
                    message: e.message,
                }),
                body => Ok(Some(body)),
            },
        }
    }
}

/// Opens a bidirectional stream on a connection, framed on both halves.
///
/// # Errors
/// [`TransportError::Connection`] when the connection has failed.
pub async fn open_stream(
    conn: &quinn::Connection,
    max_frame: usize,
) -> Result<(FramedSend, FramedRecv), TransportError> {
    let (send, recv) = conn.open_bi().await?;
    Ok((FramedSend::new(send), FramedRecv::new(recv, max_frame)))
}
