//! `corral bench …`: benchmarks that print figures.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use clap::Args;
use corral_transport::open_stream;
use corral_wire::pb::{self, envelope::Body};

#[derive(Debug, Args)]
pub struct WireOpts {
    /// Messages per throughput run.
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,
    /// Throughput runs (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Sequential round trips for the latency figures.
    #[arg(long, default_value_t = 5_000)]
    pub round_trips: usize,
    /// Payload bytes per ping (with the envelope, about 100 bytes on the wire).
    #[arg(long, default_value_t = 76)]
    pub payload: usize,
}

/// A master process started for a benchmark, killed when dropped.
struct MasterProcess {
    child: Child,
    state: PathBuf,
    addr: std::net::SocketAddr,
}

impl MasterProcess {
    fn start() -> anyhow::Result<Self> {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .context("cannot find a free UDP port")?
            .port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let state = std::env::temp_dir().join(format!("corral-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let child = Command::new(std::env::current_exe().context("cannot find this binary")?)
            .args([
                "--log",
                "warn",
                "master",
                "--http",
                "off",
                "--listen",
                &addr.to_string(),
                "--state",
            ])
            .arg(&state)
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start a master process")?;
        Ok(Self { child, state, addr })
    }
}

impl Drop for MasterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn ping(sequence: u64, payload: &[u8]) -> pb::Envelope {
    corral_wire::envelope(Body::Ping(pb::Ping {
        sequence,
        payload: payload.to_vec(),
    }))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Runs the wire benchmark against a fresh master process.
pub fn wire(o: &WireOpts) -> anyhow::Result<()> {
    let master = MasterProcess::start()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let ca = master.state.join(corral_transport::pki::CA_FILE);
        let deadline = Instant::now() + Duration::from_secs(10);
        let (endpoint, conn) = loop {
            if ca.exists() {
                let endpoint = corral_transport::client_endpoint(&ca)?;
                if let Ok(conn) =
                    corral_transport::connect(&endpoint, master.addr, Duration::from_secs(1)).await
                {
                    break (endpoint, conn);
                }
            }
            if Instant::now() > deadline {
                return Err(anyhow!("the benchmark's master did not come up within 10 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let payload = vec![0x5au8; o.payload];
        let frame_len = corral_wire::encode_frame(&ping(u64::MAX / 2, &payload))?.len();
        println!(
            "wire benchmark: one QUIC connection to a master process on {}, {}-byte frames",
            master.addr, frame_len
        );

        // Round trips: one ping in flight at a time.
        let (mut send, mut recv) = open_stream(&conn, corral_wire::DEFAULT_MAX_FRAME).await?;
        let mut rtts = Vec::with_capacity(o.round_trips);
        for i in 0..(o.round_trips + 200) as u64 {
            let t = Instant::now();
            send.send(&ping(i, &payload)).await?;
            match recv.recv().await? {
                Some(Body::Pong(p)) if p.sequence == i => {}
                other => return Err(anyhow!("expected pong {i}, got {other:?}")),
            }
            if i >= 200 {
                rtts.push(t.elapsed());
            }
        }
        send.finish();
        rtts.sort();

        // Throughput: pings pipelined on one stream while the pongs are read back.
        let mut rates = Vec::with_capacity(o.runs);
        for _ in 0..o.runs {
            let (mut send, mut recv) = open_stream(&conn, corral_wire::DEFAULT_MAX_FRAME).await?;
            let n = o.messages;
            let frames: Vec<u8> = {
                let mut all = Vec::with_capacity(frame_len * 256);
                // Same-sized frames, so a batch is a slice of whole frames.
                let frame = corral_wire::encode_frame(&ping(u64::MAX / 2, &payload))?;
                for _ in 0..256 {
                    all.extend_from_slice(&frame);
                }
                all
            };
            let start = Instant::now();
            let writer = tokio::spawn(async move {
                let mut sent = 0u64;
                while sent < n {
                    let batch = (n - sent).min(256);
                    send.send_raw(&frames[..batch as usize * frame_len]).await?;
                    sent += batch;
                }
                send.finish();
                Ok::<_, anyhow::Error>(())
            });
            let mut got = 0u64;
            while got < n {
                match recv.recv().await? {
                    Some(Body::Pong(_)) => got += 1,
                    other => return Err(anyhow!("expected a pong, got {other:?}")),
                }
            }
            let elapsed = start.elapsed();
            writer.await??;
            rates.push(n as f64 / elapsed.as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        println!(
            "throughput: {:.0} messages/s echoed (median of {} runs of {} messages; min {:.0}, max {:.0})",
            median,
            o.runs,
            o.messages,
            rates[0],
            rates[rates.len() - 1]
        );
        println!(
            "round trip: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs ({} sequential pings)",
            percentile(&rtts, 0.50).as_secs_f64() * 1e6,
            percentile(&rtts, 0.99).as_secs_f64() * 1e6,
            rtts[rtts.len() - 1].as_secs_f64() * 1e6,
            rtts.len()
        );
        println!(
            "goals: 100000 messages/s ({}), p99 under 1 ms ({})",
            if median >= 100_000.0 { "met" } else { "missed" },
            if percentile(&rtts, 0.99) < Duration::from_millis(1) { "met" } else { "missed" }
        );
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        Ok(())
    })
}
