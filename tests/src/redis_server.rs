//! A real `redis-server` for the backplane tests: started on a free
//! loopback port without persistence (`--save '' --appendonly no`), killed
//! (and restartable on the same port) by the test, killed on drop.
//!
//! Needs the `redis-server` binary (Debian: `apt-get install -y
//! redis-server`); `.ci/run` installs it.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::TIMEOUT;

/// A `redis-server` child process on `127.0.0.1`.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    pub async fn start() -> RedisServer {
        // Another process may take the port between the probe and the bind:
        // then redis-server exits, and we try another.
        for _ in 0..5 {
            let mut server = RedisServer {
                port: free_port(),
                child: None,
            };
            if server.launch().await {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Starts a server on `port` (which a test keeps for a broker that
    /// was told to connect there before Redis existed).
    pub async fn start_on(port: u16) -> RedisServer {
        let mut server = RedisServer { port, child: None };
        assert!(
            server.launch().await,
            "redis-server did not start on port {port}"
        );
        server
    }

    /// Spawns the process and waits for `PING`; `false` if it exited.
    async fn launch(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--loglevel", "warning", "--dir"])
            .arg(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("redis-server is not installed (apt-get install -y redis-server)")
            }
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if self.pong().await {
                return true;
            }
            if let Some(child) = &mut self.child {
                if child.try_wait().ok().flatten().is_some() {
                    self.child = None;
                    return false;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "redis-server on port {} did not answer PING within {TIMEOUT:?}",
            self.port
        );
    }

    /// Whether the server answers `PING` now.
    async fn pong(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(self.addr()).await else {
            return false;
        };
        if stream.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await.is_ok() && &reply == b"+PONG\r\n"
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT` (the default user).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The URL for an ACL user.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("redis://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// A command connection as the default user, for checks.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis-server")
    }

    /// Runs one command as the default user and returns its reply.
    pub async fn command<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut conn = self.connection().await;
        let (name, rest) = args.split_first().expect("a command");
        redis::cmd(name)
            .arg(rest)
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits for
    /// it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process without closing anything (`SIGSTOP`): a Redis that
    /// hangs. Its sockets stay open and the kernel still accepts connections.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run again (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} redis-server");
    }

    /// Starts a fresh server (empty: nothing is persisted) on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        assert!(
            self.launch().await,
            "redis-server did not restart on port {}",
            self.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL works on a stopped process too.
        self.kill();
    }
}
