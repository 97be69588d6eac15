//! A TCP relay on loopback that paces what the server sends, with a small receive window
//! towards the server, so that a server killed mid-body leaves few bytes in flight. TLS passes
//! through untouched. Shared by the mirror tests (Garage) and the OCI tests (a registry).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Relays a new loopback port to `upstream`, sending the server's bytes at `bytes_per_sec`;
/// returns the port.
pub(crate) async fn slow_link(upstream: u16, bytes_per_sec: u64) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                // A small window towards the store: few bytes in flight when it dies.
                let _ = socket.set_recv_buffer_size(16 * 1024);
                let Ok(server) = socket.connect(([127, 0, 0, 1], upstream).into()).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let requests = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let started = Instant::now();
                let mut sent = 0u64;
                let mut buffer = vec![0u8; 8 * 1024];
                loop {
                    let read = match server_read.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => read,
                    };
                    if client_write.write_all(&buffer[..read]).await.is_err() {
                        break;
                    }
                    sent += read as u64;
                    let due = Duration::from_secs_f64(sent as f64 / bytes_per_sec as f64);
                    tokio::time::sleep_until((started + due).into()).await;
                }
                requests.abort();
            });
        }
    });
    port
}
