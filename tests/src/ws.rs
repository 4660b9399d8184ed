//! A WebSocket protocol client for the tests (X2), built on
//! `tokio-tungstenite`: an implementation independent of the server's own
//! frame code, so the two check each other.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use janus_core::ServerMessage;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
pub use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::TIMEOUT;

/// A WebSocket client of the server's X2 endpoint.
pub struct WsClient {
    /// The connection.
    pub ws: WebSocketStream<TcpStream>,
    /// The token from the hello.
    pub token: String,
}

impl WsClient {
    /// Opens `ws://addr/` over `stream` and reads the hello.
    pub async fn over(stream: TcpStream, addr: SocketAddr) -> WsClient {
        let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream)
            .await
            .expect("WebSocket handshake");
        let mut client = WsClient {
            ws,
            token: String::new(),
        };
        match client.recv().await {
            ServerMessage::Hello { token, .. } => client.token = token,
            other => panic!("expected hello, got {other:?}"),
        }
        client
    }

    /// Connects to `addr` and reads the hello.
    pub async fn connect(addr: SocketAddr) -> WsClient {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self::over(stream, addr).await
    }

    /// Sends one text message.
    pub async fn send(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .await
            .expect("send a message");
    }

    /// Subscribes and waits for the `ACK`.
    pub async fn subscribe(&mut self, topic: &str) {
        let json = serde_json::json!({"action": "subscribe", "data": topic});
        self.send(&json.to_string()).await;
        assert_eq!(self.recv().await, ServerMessage::Ack);
    }

    /// The next message of any kind, or `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Message> {
        match tokio::time::timeout(TIMEOUT, self.ws.next()).await {
            Ok(Some(Ok(message))) => Some(message),
            Ok(Some(Err(_)) | None) => None,
            Err(_) => panic!("no WebSocket message within {TIMEOUT:?}"),
        }
    }

    /// The next text message's payload, skipping WebSocket pings.
    pub async fn recv_text(&mut self) -> String {
        loop {
            match self.next().await {
                Some(Message::Text(text)) => return text.to_string(),
                Some(Message::Ping(_) | Message::Pong(_)) => {}
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The next text message, parsed as a server frame.
    pub async fn recv(&mut self) -> ServerMessage {
        let text = self.recv_text().await;
        ServerMessage::parse(&text).unwrap_or_else(|e| panic!("bad server frame {text:?}: {e}"))
    }

    /// Reads the error frame `code`, then the close frame with `close`
    /// and the end of the stream; returns the error's reason.
    pub async fn expect_error_and_close(&mut self, code: &str, close: u16) -> String {
        let reason = match self.recv().await {
            ServerMessage::Error {
                code: got, reason, ..
            } if got == code => reason,
            other => panic!("expected error {code}, got {other:?}"),
        };
        self.expect_close(close).await;
        reason
    }

    /// Reads a close frame with `code` (skipping anything before it), then the end.
    pub async fn expect_close(&mut self, code: u16) {
        loop {
            match self.next().await {
                Some(Message::Close(frame)) => {
                    let got = frame.map(|f| u16::from(f.code));
                    assert_eq!(got, Some(code), "close code");
                    break;
                }
                Some(Message::Text(_) | Message::Ping(_) | Message::Pong(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
        assert!(
            self.next().await.is_none(),
            "the stream ends after the close"
        );
    }

    /// Closes from this side and waits for the server's answer.
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
        while self.next().await.is_some() {}
    }
}
