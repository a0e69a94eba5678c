//! One request to the master over QUIC, as every client command makes it.

use std::time::Duration;

use anyhow::{anyhow, Context as _};
use corral_transport::open_stream;
use corral_wire::pb::{self, envelope::Body, request::Kind, response::Kind as R};

use crate::opts::ClientOpts;

/// Sends one request and returns the master's answer, or a one-line error saying where it
/// tried.
pub fn request(opts: &ClientOpts, kind: Kind) -> anyhow::Result<R> {
    let mut answer = None;
    stream(opts, kind, |body| {
        answer = Some(body);
        Ok(false)
    })?;
    match answer {
        Some(Body::Response(pb::Response {
            kind: Some(R::Error(e)),
        }))
        | Some(Body::Error(e)) => Err(anyhow!("{} ({})", e.message, e.code)),
        Some(Body::Response(pb::Response { kind: Some(kind) })) => Ok(kind),
        _ => Err(anyhow!("the master at {} sent no answer", opts.master)),
    }
}

/// The agents the master knows.
pub fn list_agents(opts: &ClientOpts) -> anyhow::Result<Vec<pb::AgentInfo>> {
    match request(opts, Kind::ListAgents(pb::ListAgents {}))? {
        R::Agents(list) => Ok(list.agents),
        other => Err(anyhow!("unexpected answer from the master: {other:?}")),
    }
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
    mut each: impl FnMut(Body) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let ca = opts.ca_path();
        let endpoint = corral_transport::client_endpoint(&ca).with_context(|| {
            format!(
                "cannot use the cluster CA {} (pass --ca with the master's ca.pem)",
                ca.display()
            )
        })?;
        let conn =
            corral_transport::connect(&endpoint, opts.master, Duration::from_secs(3)).await?;
        let (mut send, mut recv) = open_stream(&conn, corral_wire::DEFAULT_MAX_FRAME).await?;
        for kind in kinds {
            send.send_body(Body::Request(pb::Request { kind: Some(kind) }))
                .await?;
        }
        send.finish();
        let result = loop {
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
        };
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        result
    })
}
