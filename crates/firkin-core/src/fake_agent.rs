//! A minimal stand-in for `firkin-agent` (only `/health` and `/init`) served on a loopback
//! address, for tests of the runtime and the HTTP edge over the fake engine and network.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves `/health` and `/init` like the agent does, on `ip:49983`.
pub async fn fake_agent(ip: Ipv4Addr) {
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from((ip, firkin_wire::agent::ENVD_PORT))).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let resp = if req.starts_with("GET /health") {
                    "HTTP/1.1 204 No Content\r\nx-firkin-agent-protocol: 1\r\nconnection: close\r\n\r\n"
                        .to_string()
                } else {
                    let body = r#"{"protocol":1,"agentVersion":"fake","envdVersion":"0.6.13"}"#;
                    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
                };
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
}
