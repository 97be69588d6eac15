//! HTTP/2 on a TLS CDN connection whose client chose `h2` by ALPN: every request is a stream
//! of the one connection, routed, faulted and logged like an HTTP/1.1 request (same
//! [`crate::server::prepare`], same body plan), and every stream's bytes share the
//! connection's pace ([`crate::pacing`]).
//!
//! Body faults map onto streams: a cut or a wrong `Content-Length` ends the stream after the
//! bytes planned, so its length disagrees with `Content-Length` (where HTTP/1.1 closes the
//! connection); `ResetBeforeResponse` resets the stream before any answer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::http::Request;
use crate::server::{prepare, BodyPlan, ConnectionInfo, Exchange, Shared};

/// Largest request body accepted on a stream (the API bodies are a few path names).
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Serves the streams of one HTTP/2 connection until the client closes it.
pub(crate) async fn serve<S>(io: S, info: ConnectionInfo, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(mut connection) = h2::server::handshake(io).await else {
        return;
    };
    // Accepting also drives the connection: frames of every stream go out from here.
    while let Some(accepted) = connection.accept().await {
        let Ok((request, respond)) = accepted else {
            return;
        };
        tokio::spawn(serve_stream(request, respond, info, Arc::clone(&shared)));
    }
}

async fn serve_stream(
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    info: ConnectionInfo,
    shared: Arc<Shared>,
) {
    let (parts, mut body) = request.into_parts();
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else {
            return;
        };
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
        if data.len() > MAX_BODY_BYTES {
            respond.send_reset(Reason::REFUSED_STREAM);
            return;
        }
    }
    let mut headers = Vec::with_capacity(parts.headers.len() + 1);
    if let Some(authority) = parts.uri.authority() {
        headers.push(("host".to_owned(), authority.to_string()));
    }
    for (name, value) in &parts.headers {
        headers.push((
            name.as_str().to_owned(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        ));
    }
    let request = Request {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        http10: false,
        headers,
        body: data.freeze(),
    };
    let exchange = prepare(&shared, info, &request);
    send(exchange, respond, &shared, info, request).await;
}

/// Logs the exchange and answers it on the stream.
async fn send(
    exchange: Exchange,
    mut respond: SendResponse<Bytes>,
    shared: &Shared,
    info: ConnectionInfo,
    request: Request,
) {
    let response = exchange.response;
    let head_only = request.is_head() || response.status == 304;
    let plan = BodyPlan::new(&exchange.body_faults, response.body.len() as u64);
    let planned = if head_only || exchange.reset {
        0
    } else {
        plan.limit
    };
    let status = if exchange.reset { 0 } else { response.status };
    // Logged before answering, so a client that has the answer also finds it in the log.
    let seq = shared.log.push(info.record(request, status, planned));
    if exchange.reset {
        respond.send_reset(Reason::INTERNAL_ERROR);
        return;
    }
    let mut head = http::Response::builder()
        .status(response.status)
        .header("server", "hub-emulator");
    for (name, value) in &response.headers {
        // Connection-specific headers do not exist in HTTP/2.
        if matches!(
            name.to_ascii_lowercase().as_str(),
            "connection" | "keep-alive" | "transfer-encoding"
        ) {
            continue;
        }
        let value: String = value
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        head = head.header(*name, value);
    }
    if response.status != 304 {
        head = head.header("content-length", plan.announced_length);
    }
    let Ok(head) = head.body(()) else {
        respond.send_reset(Reason::INTERNAL_ERROR);
        return;
    };
    let ends_now = head_only || (plan.limit == 0 && !plan.closes);
    let Ok(stream) = respond.send_response(head, ends_now) else {
        return;
    };
    if ends_now {
        return;
    }
    let mut writer = StreamWriter { stream };
    let mut sent = 0;
    let result = plan.write_body(&mut writer, &response, &mut sent).await;
    if result.is_err() || sent != planned {
        shared.log.set_body_bytes_sent(seq, sent);
    }
    if result.is_err() {
        return;
    }
    // A cut body ends its stream short of its `Content-Length` (the client sees the bytes, then
    // the mismatch), where HTTP/1.1 closes the connection; the other streams go on.
    let _ = writer.stream.send_data(Bytes::new(), true);
}

/// A stream's body as an [`AsyncWrite`]: each write waits for flow-control capacity and
/// sends what fits.
struct StreamWriter {
    stream: SendStream<Bytes>,
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.stream.reserve_capacity(buf.len());
        loop {
            let capacity = self.stream.capacity();
            if capacity > 0 {
                let n = capacity.min(buf.len());
                self.stream
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .map_err(io::Error::other)?;
                return Poll::Ready(Ok(n));
            }
            match ready!(self.stream.poll_capacity(cx)) {
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the client closed the stream",
                    )))
                }
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                Some(Ok(_)) => {}
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
