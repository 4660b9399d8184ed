//! The shared harness of the end-to-end tests: an in-process server on
//! `127.0.0.1:0`, a protocol client, paths to the workspace binaries, and
//! line-by-line reading of a child process's output.
//!
//! Everything waits on conditions with a deadline ([`wait_until`], the
//! client's receive timeout), never on fixed sleeps. [`redis_server`] runs a
//! real `redis-server` for the backplane tests.

pub mod browser;
pub mod redis_server;
pub mod ws;

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

    /// Starts a node of the cluster whose broker is `url`, named `id`, with
    /// its admin API on a free port, and waits until it is ready.
    pub async fn start_node(url: &str, id: &str) -> TestServer {
        let server = TestServer::start_with(Config {
            broker: Some(url.to_owned()),
            node_id: id.to_owned(),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..test_config()
        })
        .await;
        wait_until("the node is ready", || server.shared().is_ready()).await;
        server
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

/// Like [`wait_until`], for a condition that must be awaited (a query to
/// another process).
pub async fn wait_until_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
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

    /// Connects with a small receive buffer (so the server's writes fill it
    /// quickly) and reads the hello.
    pub async fn connect_with_rcvbuf(addr: SocketAddr, bytes: usize) -> Client {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        sock.set_recv_buffer_size(bytes).expect("rcvbuf");
        sock.set_nonblocking(true).expect("nonblocking");
        match sock.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(115) => {} // EINPROGRESS
            Err(e) => panic!("connect: {e}"),
        }
        let stream = TcpStream::from_std(sock.into()).expect("tokio stream");
        stream.writable().await.expect("connected");
        stream.set_nodelay(true).expect("nodelay");
        let mut client = Client::from_stream(stream);
        match client.recv().await {
            ServerMessage::Hello { token, .. } => client.token = token,
            other => panic!("expected hello, got {other:?}"),
        }
        client
    }

    fn from_stream(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: BytesMut::new(),
            codec: ClientCodec::default(),
            token: String::new(),
        }
    }

    /// Connects without reading anything.
    pub async fn connect_raw(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Client::from_stream(stream)
    }

    /// Connects from `source` (any address of the loopback range, so that a
    /// per-address limit can be driven without touching 127.0.0.1) without
    /// reading anything.
    pub async fn connect_raw_from(addr: SocketAddr, source: std::net::IpAddr) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(source, 0))
            .expect("bind the source address");
        let stream = socket.connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Client::from_stream(stream)
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

    /// Publishes on this connection (X3) and waits for the `ACK`.
    pub async fn publish_acked(&mut self, topic: &str, message_id: &str, data: &str) {
        let publish = Publish::new(topic, "e", message_id, data).expect("valid publish");
        self.send(ClientMessage::Publish {
            publish,
            one_shot: false,
        })
        .await;
        assert_eq!(self.recv().await, ServerMessage::Ack);
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

    /// Asserts that the server has sent nothing this client has not read:
    /// nothing buffered here and nothing waiting in the socket (checked with
    /// a direct non-blocking read, not tokio's remembered readiness).
    pub fn expect_nothing_buffered(&mut self) {
        use std::io::Read;
        assert!(
            self.buf.is_empty(),
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let mut probe = [0u8; 512];
        let sock = socket2::SockRef::from(&self.stream);
        match (&*sock).read(&mut probe) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok(0) => panic!("the server closed the connection"),
            Ok(n) => panic!(
                "unexpected bytes from the server: {:?}",
                String::from_utf8_lossy(&probe[..n])
            ),
            Err(e) => panic!("socket error: {e}"),
        }
    }

    /// Drops the connection the way a lost network does: a reset, no goodbye.
    pub fn lose(self) {
        let sock = socket2::SockRef::from(&self.stream);
        sock.set_linger(Some(Duration::ZERO)).expect("linger");
        drop(self);
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

/// An HTTP answer read to the end of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The body (everything after the headers).
    pub body: String,
}

/// Sends one HTTP/1.1 request with `Connection: close` over a fresh
/// loopback connection and reads the answer until the server closes.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> HttpReply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: janus\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    read_http(&mut stream).await
}

/// Reads an HTTP answer until end of stream (the server closes after it).
pub async fn read_http(stream: &mut TcpStream) -> HttpReply {
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut raw))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    HttpReply { status, body }
}

/// The server binary with no `JANUS_*` variables inherited from the caller.
pub fn server_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(cargo_bin("janus-server"));
    without_janus_env(&mut cmd);
    cmd
}

/// Removes every inherited `JANUS_*` variable from `cmd`'s environment.
fn without_janus_env(cmd: &mut std::process::Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("JANUS_") {
            cmd.env_remove(key);
        }
    }
}

/// A `janus-server` process (the built binary), killed when dropped.
pub struct ServerProcess {
    child: std::process::Child,
    addr: SocketAddr,
    /// What it logged up to and including its start-up line.
    pub startup: String,
    /// The rest of its stderr, line by line.
    pub log: std::sync::mpsc::Receiver<String>,
}

impl ServerProcess {
    /// Starts the binary on a free loopback port with the admin API off,
    /// plus `args`, and waits for its start-up line.
    pub fn spawn(args: &[&str]) -> ServerProcess {
        Self::spawn_with_nofile(None, args)
    }

    /// As [`ServerProcess::spawn`], under an open-file limit of `nofile` (via `prlimit`).
    pub fn spawn_with_nofile(nofile: Option<u32>, args: &[&str]) -> ServerProcess {
        Self::spawn_full(
            nofile,
            &["--listen", "127.0.0.1:0", "--admin-listen", "off"],
            args,
        )
    }

    /// Starts the binary with `base` then `args` (no `JANUS_*` variable
    /// inherited), under an open-file limit of `nofile` if given, and waits
    /// for its start-up line.
    pub fn spawn_full(nofile: Option<u32>, base: &[&str], args: &[&str]) -> ServerProcess {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}"))
                    .arg(cargo_bin("janus-server"));
                without_janus_env(&mut c);
                c
            }
            None => server_command(),
        };
        cmd.args(base)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn janus-server");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut startup = String::new();
        loop {
            let Ok(line) = log.recv_timeout(TIMEOUT) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no start-up line from janus-server; it logged:\n{startup}");
            };
            startup.push_str(&line);
            startup.push('\n');
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest
                    .split([',', ' '])
                    .next()
                    .and_then(|a| a.parse().ok())
                    .expect("a socket address in the start-up line");
                return ServerProcess {
                    child,
                    addr,
                    startup,
                    log,
                };
            }
        }
    }

    /// The client listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process itself (to signal it or wait for it).
    pub fn child(&mut self) -> &mut std::process::Child {
        &mut self.child
    }

    /// Its resident memory now, in KiB (`VmRSS` from `/proc`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc status of the server");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
