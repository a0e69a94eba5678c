//! QUIC endpoints for the master (server) and for agents and clients.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use crate::pki::{root_store, MasterIdentity};
use crate::TransportError;

/// The name in the master's certificate that peers verify, whatever address they dial.
pub const SERVER_NAME: &str = "corral-master";

/// The application protocol negotiated on every connection.
pub const ALPN: &[u8] = b"corral/1";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The round-trip estimate a connection starts with, before it has measured one.
const INITIAL_RTT: Duration = Duration::from_millis(100);

/// The socket buffers the master asks for. Every agent's packets reach one socket: after a
/// master restart, a thousand agents send their handshakes within milliseconds, and the
/// kernel's default receive buffer (about 200 KiB, a hundred packets) drops most of them.
/// The kernel caps the request at `net.core.rmem_max`/`wmem_max`.
const SERVER_SOCKET_BUFFER: usize = 8 << 20;

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(2)));
    // Idle connections die after 10 s without packets; keep-alives prevent that while the
    // peer lives, so a dead peer is noticed quickly.
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(10)) {
        t.max_idle_timeout(Some(idle));
    }
    t.max_concurrent_bidi_streams(1024u32.into());
    // Agents and their master share a data centre. With RFC 9002's default of 333 ms, a
    // handshake packet lost in a burst (every agent reconnecting to a restarted master) is
    // sent again only after a second; 100 ms brings that to about 300 ms. The estimate is
    // replaced by the measured round trip as soon as one is known.
    t.initial_rtt(INITIAL_RTT);
    Arc::new(t)
}

/// A server endpoint listening on `addr` with the master's identity.
///
/// # Errors
/// [`TransportError`] when the TLS setup is refused or the address cannot be bound.
pub fn server_endpoint(
    addr: SocketAddr,
    identity: MasterIdentity,
) -> Result<quinn::Endpoint, TransportError> {
    // The stateless-reset key comes from the master's own key, so a master restarted on
    // the same state folder resets the connections of its previous run at once: agents
    // learn it restarted on their next packet instead of after the idle timeout.
    let reset_key = {
        use rustls::pki_types::PrivateKeyDer;
        let secret: &[u8] = match &identity.key {
            PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der(),
            PrivateKeyDer::Pkcs1(k) => k.secret_pkcs1_der(),
            PrivateKeyDer::Sec1(k) => k.secret_sec1_der(),
            _ => &[],
        };
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"corral stateless reset\0");
        ctx.update(secret);
        ctx.finish()
    };
    // Connection ids are signed with a key from the same seed: a restarted master must
    // recognise its previous run's ids as its own to answer them with a reset.
    let cid_key = u64::from_le_bytes(reset_key.as_ref()[..8].try_into().unwrap_or([0u8; 8]));
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_key.as_ref());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport_config());
    let socket =
        std::net::UdpSocket::bind(addr).map_err(|source| TransportError::Bind { addr, source })?;
    enlarge_buffers(&socket);
    let runtime = quinn::default_runtime().ok_or_else(|| TransportError::Bind {
        addr,
        source: std::io::Error::other("no async runtime to run the endpoint on"),
    })?;
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
    // After a restart every agent's next packet earns a reset, and every reset counts:
    // an agent that misses one learns of the restart only at its next heartbeat. quinn
    // paces resets by a minimum interval (20 ms by default) measured against one clock
    // reading per batch of received datagrams, so any interval at all answers only the
    // first packet of a burst (at 10 µs, a quarter of 1,000 agents were told at once and
    // the rest one heartbeat at a time). A reset is always smaller than the packet that
    // caused it, so answering every one amplifies nothing.
    endpoint_config.min_reset_interval(Duration::ZERO);
    endpoint_config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    quinn::Endpoint::new(endpoint_config, Some(config), socket, runtime)
        .map_err(|source| TransportError::Bind { addr, source })
}

/// Asks the kernel for [`SERVER_SOCKET_BUFFER`] bytes of receive and send buffer; what it
/// grants is logged, and a refusal only costs the larger burst.
fn enlarge_buffers(socket: &std::net::UdpSocket) {
    let sock = socket2::SockRef::from(socket);
    if let Err(e) = sock.set_recv_buffer_size(SERVER_SOCKET_BUFFER) {
        tracing::warn!(error = %e, "cannot enlarge the QUIC socket's receive buffer");
    }
    if let Err(e) = sock.set_send_buffer_size(SERVER_SOCKET_BUFFER) {
        tracing::warn!(error = %e, "cannot enlarge the QUIC socket's send buffer");
    }
    tracing::debug!(
        recv = sock.recv_buffer_size().unwrap_or(0),
        send = sock.send_buffer_size().unwrap_or(0),
        "QUIC socket buffers"
    );
}

/// A client endpoint that trusts only the CA in `ca_path`.
///
/// # Errors
/// [`TransportError`] when the CA file is unusable or no local socket can be bound.
pub fn client_endpoint(ca_path: &Path) -> Result<quinn::Endpoint, TransportError> {
    let roots = root_store(ca_path)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config());
    let bind: SocketAddr = ([0, 0, 0, 0], 0).into();
    let mut endpoint = quinn::Endpoint::client(bind)
        .map_err(|source| TransportError::Bind { addr: bind, source })?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Connects to the master at `addr`, verifying its certificate against the endpoint's CA.
///
/// # Errors
/// [`TransportError::Connect`] naming the address when the handshake fails or times out.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<quinn::Connection, TransportError> {
    let connecting = endpoint
        .connect(addr, SERVER_NAME)
        .map_err(|e| TransportError::Connect {
            addr,
            reason: e.to_string(),
        })?;
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(TransportError::Connect {
            addr,
            reason: e.to_string(),
        }),
        Err(_) => Err(TransportError::Connect {
            addr,
            reason: format!("no answer within {} ms", timeout.as_millis()),
        }),
    }
}
