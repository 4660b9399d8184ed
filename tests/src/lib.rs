//! The shared harness of the end-to-end tests: an in-process server on
//! `127.0.0.1:0`, a protocol client, paths to the workspace binaries, and
//! line-by-line reading of a child process's output.
//!
//! Everything waits on conditions with a deadline ([`wait_until`], the
//! client's receive timeout), never on fixed sleeps.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use janus_core::{ClientCodec, ClientMessage, Publish, ServerMessage};
use janus_server::{Config, Server, Shared};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::codec::Decoder;

/// How long any single wait in a test may take before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A server running in-process on an ephemeral loopback port.
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Starts a server with the default configuration (admin API off).
    pub async fn start() -> TestServer {
        Self::start_with(test_config()).await
    }

    /// Starts a server with `config` (its `listen` is replaced by `127.0.0.1:0`).
    pub async fn start_with(mut config: Config) -> TestServer {
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .expect("bind loopback");
        let server = Server::with_listener(listener, config, 19_000).expect("server");
        let addr = server.local_addr();
        let shared = server.shared();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The client listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's shared state: counters, topics, sessions.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Triggers a graceful shutdown and waits for the server to finish it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(TIMEOUT, task)
                .await
                .expect("server shut down in time")
                .expect("server task")
                .expect("server run");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            self.shared.drain();
            task.abort();
        }
    }
}

/// The default configuration for tests: admin API off, everything else default.
pub fn test_config() -> Config {
    Config {
        admin_listen: None,
        ..Config::default()
    }
}

/// Polls `cond` until it holds, failing the test after [`TIMEOUT`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A protocol client over a real socket.
pub struct Client {
    /// The socket.
    pub stream: TcpStream,
    buf: BytesMut,
    codec: ClientCodec,
    /// The token from the hello.
    pub token: String,
}

impl Client {
    /// Connects and reads the hello.
    pub async fn connect(addr: SocketAddr) -> Client {
        let mut client = Self::connect_raw(addr).await;
        match client.recv().await {
            ServerMessage::Hello { token, .. } => client.token = token,
            other => panic!("expected hello, got {other:?}"),
        }
        client
    }

    /// Connects without reading anything.
    pub async fn connect_raw(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buf: BytesMut::new(),
            codec: ClientCodec::default(),
            token: String::new(),
        }
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Sends one message.
    pub async fn send(&mut self, message: ClientMessage) {
        let mut out = BytesMut::new();
        message.encode(&mut out);
        self.send_raw(&out).await;
    }

    /// Subscribes and waits for the `ACK`.
    pub async fn subscribe(&mut self, topic: &str) {
        self.send(ClientMessage::Subscribe(topic.to_owned())).await;
        assert_eq!(self.recv().await, ServerMessage::Ack, "subscribe {topic}");
    }

    /// The next server frame's raw payload (terminator removed), or `None` at end of stream.
    pub async fn recv_raw_or_eof(&mut self) -> Option<Vec<u8>> {
        let fut = async {
            loop {
                if let Some(pos) = self.buf.iter().position(|b| *b == 0x01) {
                    let frame = self.buf.split_to(pos).to_vec();
                    self.buf.advance(1);
                    return Some(frame);
                }
                let n = self.stream.read_buf(&mut self.buf).await.unwrap_or(0);
                if n == 0 {
                    return None;
                }
            }
        };
        tokio::time::timeout(TIMEOUT, fut)
            .await
            .expect("server frame in time")
    }

    /// The next server frame's raw payload.
    pub async fn recv_raw(&mut self) -> Vec<u8> {
        self.recv_raw_or_eof()
            .await
            .expect("a frame, not end of stream")
    }

    /// The next server message, or `None` at end of stream.
    pub async fn recv_or_eof(&mut self) -> Option<ServerMessage> {
        let raw = self.recv_raw_or_eof().await?;
        let mut framed = BytesMut::from(&raw[..]);
        framed.extend_from_slice(&[0x01]);
        Some(
            self.codec
                .decode(&mut framed)
                .expect("well-formed server frame")
                .expect("one frame"),
        )
    }

    /// The next server message.
    pub async fn recv(&mut self) -> ServerMessage {
        self.recv_or_eof()
            .await
            .expect("a message, not end of stream")
    }

    /// Expects an error frame with `code`, returns its reason.
    pub async fn expect_error(&mut self, code: &str) -> String {
        match self.recv().await {
            ServerMessage::Error {
                code: got, reason, ..
            } => {
                assert_eq!(got, code, "error code (reason: {reason})");
                reason
            }
            other => panic!("expected error {code}, got {other:?}"),
        }
    }

    /// Expects the server to close the connection (after any frames already sent).
    pub async fn expect_closed(&mut self) {
        if let Some(frame) = self.recv_raw_or_eof().await {
            panic!("expected close, got {:?}", String::from_utf8_lossy(&frame));
        }
    }

    /// Proves the connection is still open: a subscribe to a fresh topic is acknowledged.
    pub async fn expect_open(&mut self) {
        self.subscribe("__still_open__").await;
        self.send(ClientMessage::Unsubscribe("__still_open__".into()))
            .await;
    }
}

/// Publishes the 2009 way (`PUBLISH␀{json}` then close) and waits for the server to close.
pub async fn publish_legacy(addr: SocketAddr, json: &str) {
    let mut c = Client::connect(addr).await;
    c.send_raw(b"<regular-socket/>\0PUBLISH\0").await;
    c.send_raw(json.as_bytes()).await;
    c.stream.shutdown().await.expect("half-close");
    c.expect_closed().await;
}

/// Publishes `data` to `topic` with a NUL-terminated one-shot `PUBLISH`, waiting for the close.
pub async fn publish(addr: SocketAddr, topic: &str, message_id: &str, data: &str) {
    let publish = Publish::new(topic, "test", message_id, data).expect("valid publish");
    let mut c = Client::connect(addr).await;
    c.send(ClientMessage::Publish {
        publish,
        one_shot: true,
    })
    .await;
    c.expect_closed().await;
}

/// Reads lines from a child's pipe into a channel, so a test can wait for one with a deadline.
pub fn lines_of(
    pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    use tokio::io::AsyncBufReadExt;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line from a child's pipe, failing the test after [`TIMEOUT`].
pub async fn next_line(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .expect("a line in time")
        .expect("a line, not the end of the output")
}

/// Waits for a child to exit, returning its exit code.
pub async fn exit_code(child: &mut tokio::process::Child) -> i32 {
    tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("janus-admin exits in time")
        .expect("wait for janus-admin")
        .code()
        .unwrap_or(-1)
}

/// Runs `f` with a fresh multi-thread runtime (for tests that need real parallelism).
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Path of a workspace binary, built (debug profile) on first use.
pub fn cargo_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "-p",
                "janus-server",
                "-p",
                "janus-bot",
                "-p",
                "janus-admin",
                "-p",
                "janus-histo",
            ])
            .status()
            .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("cargo build failed: {status}"))
        }
    });
    if let Err(e) = built {
        panic!("cannot build the workspace binaries: {e}");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("debug").join(name)
}
