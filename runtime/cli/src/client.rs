//! Requests to the master over QUIC: one per command, or many on a [`Session`].

use std::time::Duration;

use anyhow::{anyhow, Context as _};
use corral_transport::open_stream;
use corral_wire::pb::{self, envelope::Body, request::Kind, response::Kind as R};

use crate::opts::ClientOpts;

/// Sends one request and returns the master's answer, or a one-line error saying where it
/// tried.
pub fn request(opts: &ClientOpts, kind: Kind) -> anyhow::Result<R> {
    request_many(opts, vec![kind])
}

/// Sends several requests on one stream and returns the master's one answer.
fn request_many(opts: &ClientOpts, kinds: Vec<Kind>) -> anyhow::Result<R> {
    Session::connect(opts)?.request_many(kinds)
}

/// The master refused a request: its message and error code.
#[derive(Debug)]
pub struct Refusal {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for Refusal {}

/// The master's one answer on a stream, as a result; a refusal is a [`Refusal`].
fn one_answer(opts: &ClientOpts, answer: Option<Body>) -> anyhow::Result<R> {
    match answer {
        Some(Body::Response(pb::Response {
            kind: Some(R::Error(e)),
        }))
        | Some(Body::Error(e)) => Err(Refusal {
            code: e.code,
            message: e.message,
        }
        .into()),
        Some(Body::Response(pb::Response { kind: Some(kind) })) => Ok(kind),
        _ => Err(anyhow!("the master at {} sent no answer", opts.master)),
    }
}

/// The agents the master knows.
pub fn list_agents(opts: &ClientOpts) -> anyhow::Result<Vec<pb::AgentInfo>> {
    Session::connect(opts)?.list_agents()
}

/// Sends one request and hands every answer on the stream to `each` until it returns
/// `Ok(false)` or the stream ends.
pub fn stream(
    opts: &ClientOpts,
    kind: Kind,
    each: impl FnMut(Body) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    stream_many(opts, vec![kind], each)
}

/// Sends several requests on one stream, then hands every answer to `each` until it
/// returns `Ok(false)` or the stream ends.
pub fn stream_many(
    opts: &ClientOpts,
    kinds: Vec<Kind>,
    each: impl FnMut(Body) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    Session::connect(opts)?.stream_many(kinds, each)
}

/// One connection to the master for many requests, each on its own stream. A command
/// makes one request and closes; a tool that asks again and again (the benchmarks' polls)
/// keeps a session, and pays for neither a handshake per request nor a close.
pub struct Session {
    rt: tokio::runtime::Runtime,
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    opts: ClientOpts,
}

impl Session {
    /// Connects to the master `opts` names.
    pub fn connect(opts: &ClientOpts) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let ca = opts.ca_path();
        let (endpoint, conn) = rt.block_on(async {
            let endpoint = corral_transport::client_endpoint(&ca).with_context(|| {
                format!(
                    "cannot use the cluster CA {} (pass --ca with the master's ca.pem)",
                    ca.display()
                )
            })?;
            let conn =
                corral_transport::connect(&endpoint, opts.master, Duration::from_secs(3)).await?;
            anyhow::Ok((endpoint, conn))
        })?;
        Ok(Self {
            rt,
            endpoint,
            conn,
            opts: opts.clone(),
        })
    }

    /// Sends one request and returns the master's answer.
    pub fn request(&self, kind: Kind) -> anyhow::Result<R> {
        self.request_many(vec![kind])
    }

    /// Sends several requests on one stream and returns the master's one answer.
    pub fn request_many(&self, kinds: Vec<Kind>) -> anyhow::Result<R> {
        let mut answer = None;
        self.stream_many(kinds, |body| {
            answer = Some(body);
            Ok(false)
        })?;
        one_answer(&self.opts, answer)
    }

    /// Sends `header` and then `bytes` in chunks on one stream (see [`upload`]).
    pub fn upload(&self, header: Kind, bytes: &[u8]) -> anyhow::Result<R> {
        self.request_many(upload_kinds(header, bytes))
    }

    /// The agents the master knows.
    pub fn list_agents(&self) -> anyhow::Result<Vec<pb::AgentInfo>> {
        match self.request(Kind::ListAgents(pb::ListAgents {}))? {
            R::Agents(list) => Ok(list.agents),
            other => Err(anyhow!("unexpected answer from the master: {other:?}")),
        }
    }

    /// Sends several requests on one new stream, then hands every answer to `each` until
    /// it returns `Ok(false)` or the stream ends.
    pub fn stream_many(
        &self,
        kinds: Vec<Kind>,
        mut each: impl FnMut(Body) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        self.rt.block_on(async {
            let (mut send, mut recv) =
                open_stream(&self.conn, corral_wire::DEFAULT_MAX_FRAME).await?;
            for kind in kinds {
                send.send_body(Body::Request(pb::Request { kind: Some(kind) }))
                    .await?;
            }
            send.finish();
            loop {
                match recv.recv_envelope().await {
                    Ok(Some(env)) => match corral_wire::check_version(env) {
                        Ok(body) => match each(body) {
                            Ok(true) => continue,
                            Ok(false) => break Ok(()),
                            Err(e) => break Err(e),
                        },
                        Err(e) => break Err(e.into()),
                    },
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e.into()),
                }
            }
        })
    }
}

/// How long a closing [`Session`] lets its connection run: long enough to send the close
/// (on the connection's next turn, well under a millisecond), so that the master frees the
/// connection at once rather than after its idle timeout.
const CLOSE_GRACE: Duration = Duration::from_millis(10);

impl Drop for Session {
    /// Closes the connection and gives it [`CLOSE_GRACE`] to tell the master. Waiting for
    /// the endpoint to be idle would also wait out QUIC's draining period (three probe
    /// timeouts, about 80 ms), which only matters to a peer that stays.
    fn drop(&mut self) {
        self.conn.close(0u32.into(), b"done");
        self.rt.block_on(async {
            let _ = tokio::time::timeout(CLOSE_GRACE, self.endpoint.wait_idle()).await;
        });
    }
}

/// Bytes of a component per frame: well under the master's default frame limit.
const CHUNK: usize = 1 << 20;

/// Sends `header` and then `bytes` in `PolicyChunk`s on one stream, and returns the
/// master's answer.
pub fn upload(opts: &ClientOpts, header: Kind, bytes: &[u8]) -> anyhow::Result<R> {
    request_many(opts, upload_kinds(header, bytes))
}

/// `header`, then `bytes` in [`CHUNK`]-sized `PolicyChunk`s (one, empty, for no bytes).
fn upload_kinds(header: Kind, bytes: &[u8]) -> Vec<Kind> {
    let mut kinds = vec![header];
    let pieces: Vec<&[u8]> = if bytes.is_empty() {
        vec![&[][..]]
    } else {
        bytes.chunks(CHUNK).collect()
    };
    let n = pieces.len();
    for (i, piece) in pieces.into_iter().enumerate() {
        kinds.push(Kind::PolicyChunk(pb::PolicyChunk {
            data: piece.to_vec(),
            last: i + 1 == n,
        }));
    }
    kinds
}

/// Reads a policy component: a file, or the name of one built into `corral`.
pub fn component(arg: &std::path::Path) -> anyhow::Result<(Vec<u8>, String)> {
    if arg.exists() {
        let bytes = std::fs::read(arg).with_context(|| format!("cannot read {}", arg.display()))?;
        return Ok((bytes, arg.display().to_string()));
    }
    let name = arg.to_string_lossy();
    if let Some(bytes) = corral_policy::builtin::scheduler(&name) {
        return Ok((bytes.to_vec(), format!("built-in {name}")));
    }
    if name == "drf" {
        return Ok((corral_policy::builtin::DRF.to_vec(), "built-in drf".into()));
    }
    let names: Vec<&str> = corral_policy::builtin::SCHEDULERS
        .iter()
        .map(|(n, _)| *n)
        .collect();
    Err(crate::opts::usage(format!(
        "{name}: no such file, and not a built-in policy (schedulers: {}; allocator: drf)",
        names.join(", ")
    )))
}
