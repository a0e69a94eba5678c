//! Hostile and broken peers: each gets a clear error and a closed connection, and the
//! master keeps serving its agents.

use std::time::Duration;

use corral_transport::{client_endpoint, connect, FramedRecv, FramedSend};
use corral_wire::pb::{self, envelope::Body};
use prost::Message;

use crate::harness::{agent_id, wait_for, Master, TempDir};

/// Sends `bytes` as the first thing on a new stream, finishes it, and returns the error
/// envelope the master answers with and the reason the connection was closed.
async fn send_raw(master: &Master, bytes: Vec<u8>) -> (pb::Error, String) {
    let endpoint = client_endpoint(&master.ca()).expect("client endpoint");
    let conn = connect(&endpoint, master.addr, Duration::from_secs(5))
        .await
        .expect("connect");
    let (send, recv) = conn.open_bi().await.expect("open stream");
    let mut send = FramedSend::new(send);
    send.send_raw(&bytes).await.expect("write");
    send.finish();
    let mut recv = FramedRecv::new(recv, 1 << 20);
    let env = tokio::time::timeout(Duration::from_secs(5), recv.recv_envelope())
        .await
        .expect("an answer within 5 s")
        .expect("a readable answer")
        .expect("an envelope, not the end of the stream");
    let err = match env.body {
        Some(Body::Error(e)) => e,
        other => panic!("expected an error envelope, got {other:?}"),
    };
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("the master closes the connection");
    let reason = match closed {
        quinn::ConnectionError::ApplicationClosed(c) => {
            String::from_utf8_lossy(&c.reason).into_owned()
        }
        other => panic!("expected the master to close the connection, got {other}"),
    };
    (err, reason)
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_peers_are_refused_and_the_master_keeps_serving() {
    let master = Master::start(&[
        "--agent-timeout",
        "3s",
        "--heartbeat-interval",
        "200ms",
        "--max-frame",
        "65536",
    ]);
    let agent_dir = TempDir::new("steady-agent");
    let mut agent = master.agent(&agent_dir.0, &[]);
    let m = &master;
    tokio::task::block_in_place(|| {
        wait_for(
            "the steady agent to register",
            Duration::from_secs(5),
            || agent_id(&agent_dir.0).is_some(),
        )
    });

    // Garbage: a valid length, then bytes that are no protobuf envelope.
    let (err, reason) = send_raw(m, frame(&[0xff; 40])).await;
    assert_eq!(err.code, "malformed", "{err:?}");
    assert!(reason.contains("malformed message"), "{reason}");

    // Pure noise, whose first four bytes announce a 4 GiB frame.
    let (err, _) = send_raw(m, vec![0xff; 64]).await;
    assert_eq!(err.code, "frame_too_large", "{err:?}");

    // A frame over the size limit, refused from its header.
    let big = pb::Envelope {
        version: Some(pb::Version { major: 1, minor: 0 }),
        body: Some(Body::Ping(pb::Ping {
            sequence: 1,
            payload: vec![7; 100_000],
        })),
    };
    let (err, reason) = send_raw(m, frame(&big.encode_to_vec())).await;
    assert_eq!(err.code, "frame_too_large", "{err:?}");
    assert!(
        err.message.contains("65536"),
        "names the limit: {}",
        err.message
    );
    assert!(reason.contains("exceeds the limit"), "{reason}");

    // A truncated message: the header promises more than the stream delivers.
    let ping = corral_wire::envelope(Body::Ping(pb::Ping {
        sequence: 1,
        payload: vec![1; 50],
    }));
    let mut bytes = frame(&ping.encode_to_vec());
    bytes.truncate(bytes.len() - 10);
    let (err, _) = send_raw(m, bytes).await;
    assert_eq!(err.code, "truncated", "{err:?}");

    // A message of an unknown protocol version: the error names both versions.
    let mut future = ping.clone();
    future.version = Some(pb::Version { major: 9, minor: 4 });
    let (err, reason) = send_raw(m, frame(&future.encode_to_vec())).await;
    assert_eq!(err.code, "version_mismatch", "{err:?}");
    assert!(
        err.message.contains("9.4") && err.message.contains("1.0"),
        "{}",
        err.message
    );
    assert!(reason.contains("9.4"), "{reason}");

    // The master still serves: the steady agent stayed active throughout, and a well-formed
    // ping on a fresh connection is answered.
    let id = agent_id(&agent_dir.0).expect("agent id");
    tokio::task::block_in_place(|| {
        assert_eq!(m.agent_state(&id).as_deref(), Some("active"));
    });
    assert!(agent.is_running(), "{}", agent.log_text());
    let endpoint = client_endpoint(&m.ca()).expect("endpoint");
    let conn = connect(&endpoint, m.addr, Duration::from_secs(5))
        .await
        .expect("connect");
    let (send, recv) = conn.open_bi().await.expect("stream");
    let mut send = FramedSend::new(send);
    let mut recv = FramedRecv::new(recv, 1 << 20);
    send.send(&ping).await.expect("send ping");
    match recv.recv().await.expect("pong") {
        Some(Body::Pong(p)) => assert_eq!(p.payload, vec![1; 50]),
        other => panic!("expected a pong, got {other:?}"),
    }
    assert!(master.proc.log_text().contains("refusing peer"));
}
