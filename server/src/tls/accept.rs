//! The accept loop of a TLS listener: each connection's handshake runs on
//! its own task (a slow or silent client holds up no one), with the server
//! configuration in force when it arrived (so a SIGHUP reload applies to new
//! connections), and a connection that completed it goes to tonic with its
//! verified certificate ([`super::TlsConnInfo`]).
//!
//! A refused handshake is logged with the remote address and rustls's reason
//! (unknown CA, expired, no certificate); key material never is. On the
//! client port a client certificate is checked right after the handshake
//! ([`super::ClientCheck`]): a client refused there, or one that speaks
//! plaintext HTTP/2 to a TLS port, gets a gRPC UNAUTHENTICATED error naming
//! the reason instead of a closed connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;

use super::{PeerCert, ServerSide, Swap, TlsConnInfo};
use crate::ports::Port;

/// How long a connection may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first bytes of a plaintext HTTP/2 connection (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An accepted connection after a completed TLS handshake.
#[derive(Debug)]
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: TlsConnInfo,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = TlsConnInfo;

    fn connect_info(&self) -> TlsConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts connections on `listener` and completes their TLS handshakes
/// with `config`'s current configuration; `port` is the listener's (named
/// in logs and in each connection's [`TlsConnInfo`]). The stream ends the accept loop when dropped (server shutdown).
pub fn incoming(
    listener: TcpListener,
    config: Arc<Swap<ServerSide>>,
    port: Port,
) -> ReceiverStream<io::Result<TlsConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let port_key = port.key();
    let peer_port = port == Port::Peer;
    tokio::spawn(async move {
        let port = port_key;
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(port, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY on a connection");
            }
            let side = config.current();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    handshake(&side, tcp, remote, peer_port),
                )
                .await
                {
                    Ok(Ok(Some(conn))) => {
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(port, %remote, error = %e, "TLS handshake refused");
                    }
                    Err(_) => tracing::warn!(
                        port,
                        %remote,
                        "TLS handshake not completed within {HANDSHAKE_TIMEOUT:?}: connection closed"
                    ),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The handshake of one connection: `None` for a plaintext client or a
/// refused client certificate (answered and closed here).
async fn handshake(
    side: &ServerSide,
    tcp: TcpStream,
    remote: SocketAddr,
    peer_port: bool,
) -> io::Result<Option<TlsConn>> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Ok(None);
    }
    // Every TLS connection opens with a handshake record (content type 22).
    if first[0] != 0x16 {
        refuse_plaintext(tcp, remote).await;
        return Ok(None);
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(side.config.clone());
    let stream = acceptor.accept(tcp).await?;
    if let Some(check) = &side.clients {
        if let Err(reason) = check.check(stream.get_ref().1.peer_certificates()) {
            tracing::warn!(%remote, %reason, "TLS client refused");
            answer_unauthenticated(stream, &reason).await;
            return Ok(None);
        }
    }
    let peer = match stream.get_ref().1.peer_certificates() {
        Some([leaf, ..]) => match PeerCert::parse(leaf) {
            Ok(cert) => Some(Arc::new(cert)),
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        },
        _ => None,
    };
    Ok(Some(TlsConn {
        stream,
        info: TlsConnInfo {
            remote_addr: Some(remote),
            peer,
            peer_port,
        },
    }))
}

/// Answers every gRPC call of a plaintext HTTP/2 connection with
/// UNAUTHENTICATED saying that the port needs TLS, then closes it; any other
/// plaintext is just closed.
async fn refuse_plaintext(tcp: TcpStream, remote: SocketAddr) {
    let mut head = [0u8; H2_PREFACE.len()];
    let looks_h2 = match tokio::time::timeout(Duration::from_secs(2), tcp.peek(&mut head)).await {
        Ok(Ok(n)) => n > 0 && H2_PREFACE.starts_with(&head[..n]),
        _ => false,
    };
    tracing::warn!(%remote, "a client spoke plaintext to a TLS port: refused");
    if looks_h2 {
        answer_unauthenticated(
            tcp,
            "this port requires TLS and the client spoke plaintext: connect with \
             https:// and the cluster's CA certificate (--cacert)",
        )
        .await;
    }
}

/// Serves HTTP/2 on `io` for a few seconds, answering every gRPC call with
/// UNAUTHENTICATED and `reason`, then drops the connection.
async fn answer_unauthenticated<IO>(io: IO, reason: &str)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // grpc-message is percent-encoded on the wire (gRPC over HTTP/2).
    let reason: Arc<str> = percent_encode(reason).into();
    let service = hyper::service::service_fn(move |_req| {
        let reason = reason.clone();
        async move {
            http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .header("grpc-status", "16")
                .header("grpc-message", &*reason)
                .body(http_body_util::Empty::<bytes::Bytes>::new())
        }
    });
    let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
}

/// `text` as a grpc-message header value: printable ASCII but '%' as it is,
/// every other byte as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(super::percent_encode("plain text: ok"), "plain text: ok");
        assert_eq!(super::percent_encode("50%\n\u{e9}"), "50%25%0A%C3%A9");
    }
}
