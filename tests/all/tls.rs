//! Only peers that trust the cluster CA can talk to the master.

use std::time::Duration;

use corral_transport::{client_endpoint, connect, pki::MasterIdentity};

use crate::harness::{Master, TempDir};

#[tokio::test]
async fn a_client_with_another_ca_cannot_connect() {
    let master = Master::start(&[]);
    // A second, unrelated cluster CA.
    let other = TempDir::new("other-ca");
    let identity = MasterIdentity::load_or_create(&other.0).expect("other CA");
    let endpoint = client_endpoint(&identity.ca_path).expect("endpoint");
    let err = connect(&endpoint, master.addr, Duration::from_secs(5))
        .await
        .expect_err("the handshake must fail");
    let text = err.to_string();
    assert!(text.contains(&master.addr.to_string()), "{text}");
    assert!(
        text.to_lowercase().contains("certificate") || text.contains("UnknownIssuer"),
        "says the certificate was not trusted: {text}"
    );

    // The CLI with the wrong CA fails the same way, in one line.
    let out = std::process::Command::new(crate::harness::corral_bin())
        .args(["agents", "--master", &master.addr.to_string(), "--ca"])
        .arg(&identity.ca_path)
        .output()
        .expect("run corral");
    assert_eq!(out.status.code(), Some(1));

    // The right CA works.
    let endpoint = client_endpoint(&master.ca()).expect("endpoint");
    connect(&endpoint, master.addr, Duration::from_secs(5))
        .await
        .expect("trusted client connects");
}
