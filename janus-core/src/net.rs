//! Addresses given on command lines and in configuration.

use std::net::{SocketAddr, ToSocketAddrs};

/// Resolves `HOST:PORT` to one address: the host's first IPv4 address, else
/// its first IPv6 one (`localhost` is then 127.0.0.1 whatever the resolver
/// lists first, which is where servers listen by default).
///
/// # Errors
/// A message naming `target` when it does not resolve, or resolves to nothing.
pub fn resolve_prefer_ipv4(target: &str) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {target:?} (expected HOST:PORT): {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{target:?} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::resolve_prefer_ipv4;

    #[test]
    fn localhost_is_ipv4_and_bad_targets_say_why() {
        let addr = resolve_prefer_ipv4("localhost:8081").expect("localhost resolves");
        assert!(addr.is_ipv4() && addr.port() == 8081, "{addr}");
        let err = resolve_prefer_ipv4("no-port").expect_err("no port");
        assert!(err.contains("no-port"), "{err}");
    }
}
