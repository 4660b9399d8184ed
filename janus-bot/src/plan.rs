//! Who runs which clients: targets, source addresses and workers.
//!
//! Client `g` (of `0..clients`) connects to target `g % targets`, so every
//! server gets its share. Its source address depends on how many clients
//! share its (source, target) pair: the kernel has ~28,000 ephemeral ports
//! (32768–60999) per pair, and connecting gets slow past half of them (see
//! [`PER_SOURCE`]), so a loopback target with more than [`PER_SOURCE`]
//! clients gets them bound to `127.0.0.1`, `127.0.0.2`, … in turn, unless
//! `--source-ips` names the addresses.
//!
//! The clients are then cut into contiguous slices, one per worker. A worker
//! holds at most [`PER_WORKER`] clients because one process may hold at most
//! 20,000 open files on our machines, and the number of workers defaults to
//! what that requires. With agents, clients are first shared out evenly
//! among the agents, then each agent's share among as many workers as it
//! needs (each worker is one connection to the agent).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{bail, Context as _};

use crate::control::ClientGroup;

/// Clients per (source address, target) before the next source address is
/// used.
///
/// Well below the ~28,000 ephemeral ports on purpose: Linux's `connect()`
/// first searches the ports of one parity (half the range, ~14,000), and
/// once those are taken every further connect scans them all. Measured here
/// with 19,000 clients to one server: 9.6 s and 10.4 CPU-s of setup from one
/// source address, 1.9 s and 1.2 CPU-s from two.
pub const PER_SOURCE: u64 = 12_000;

/// Most clients per (source address, target) when no other source address
/// can be chosen automatically (a remote target): slow to connect past
/// [`PER_SOURCE`], but below the ephemeral port range.
pub const MAX_PER_SOURCE: u64 = 25_000;

/// Ephemeral ports per (source address, target) on our machines.
pub const EPHEMERAL_PORTS: u64 = 60_999 - 32_768 + 1;

/// Default most clients one worker process holds.
pub const PER_WORKER: u64 = 18_000;

/// Where a worker runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A child process of the coordinator.
    Local,
    /// A worker process of the agent at this address.
    Agent(String),
}

/// One worker's share of the swarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPlan {
    /// Where it runs.
    pub place: Place,
    /// Its clients.
    pub groups: Vec<ClientGroup>,
    /// Index in the swarm of its first client.
    pub first: u64,
}

impl WorkerPlan {
    /// Number of clients.
    pub fn clients(&self) -> u64 {
        self.groups.iter().map(|g| u64::from(g.count)).sum()
    }
}

/// Parses `--source-ips`: addresses and inclusive IPv4 ranges, comma-separated,
/// e.g. `127.0.0.2-127.0.0.20,127.0.1.1`.
///
/// # Errors
/// For unreadable addresses, backwards ranges and more than 65,536 addresses.
pub fn parse_source_ips(text: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a
                .trim()
                .parse()
                .with_context(|| format!("bad address in range {part:?}"))?;
            let b: Ipv4Addr = b
                .trim()
                .parse()
                .with_context(|| format!("bad address in range {part:?}"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a {
                bail!("range {part:?} runs backwards");
            }
            if out.len() as u64 + u64::from(b - a) + 1 > 65_536 {
                bail!("--source-ips names more than 65,536 addresses");
            }
            out.extend((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))));
        } else {
            out.push(
                part.parse()
                    .with_context(|| format!("bad source address {part:?}"))?,
            );
        }
    }
    if out.is_empty() {
        bail!("--source-ips names no address");
    }
    Ok(out)
}

/// Chooses source addresses for the clients of each target.
#[derive(Debug, Clone)]
struct Sources {
    /// Per target: the addresses its clients bind to in turn (empty: none).
    per_target: Vec<Vec<IpAddr>>,
    /// Per target: clients per address before moving to the next one
    /// (automatic mode), or 0 for round robin (explicit list).
    fill: Vec<u64>,
}

impl Sources {
    fn new(
        targets: &[SocketAddr],
        clients: u64,
        explicit: Option<&[IpAddr]>,
    ) -> anyhow::Result<Self> {
        let t = targets.len() as u64;
        let mut per_target = Vec::new();
        let mut fill = Vec::new();
        for (i, target) in targets.iter().enumerate() {
            let count = clients / t + u64::from((i as u64) < clients % t);
            if let Some(list) = explicit {
                let per_source = count.div_ceil(list.len() as u64);
                if per_source > EPHEMERAL_PORTS {
                    bail!(
                        "{per_source} clients per source address to {target} exceed the {EPHEMERAL_PORTS} ephemeral ports; give more --source-ips"
                    );
                }
                per_target.push(list.to_vec());
                fill.push(0);
            } else if count <= PER_SOURCE || (!target.ip().is_loopback() && count <= MAX_PER_SOURCE)
            {
                per_target.push(Vec::new());
                fill.push(0);
            } else if target.ip().is_loopback() && target.is_ipv4() {
                let n = count.div_ceil(PER_SOURCE);
                if n > 250 {
                    bail!(
                        "{count} clients to {target} need more than 250 loopback source addresses"
                    );
                }
                per_target.push(
                    (1..=n as u8)
                        .map(|k| IpAddr::V4(Ipv4Addr::new(127, 0, 0, k)))
                        .collect(),
                );
                fill.push(PER_SOURCE);
            } else {
                bail!(
                    "{count} clients to {target} exceed one source address's ~{EPHEMERAL_PORTS} ephemeral ports; give --source-ips"
                );
            }
        }
        Ok(Self { per_target, fill })
    }

    /// The source of the `k`-th client of target `t`.
    fn of(&self, t: usize, k: u64) -> Option<IpAddr> {
        let list = &self.per_target[t];
        if list.is_empty() {
            return None;
        }
        let i = k.checked_div(self.fill[t]).unwrap_or(k % list.len() as u64);
        list.get(i as usize).copied()
    }
}

/// Counts the clients `range` of the swarm per (target, source).
fn groups_of(range: std::ops::Range<u64>, targets: usize, sources: &Sources) -> Vec<ClientGroup> {
    let t = targets as u64;
    let mut counts: BTreeMap<(u16, Option<IpAddr>), u32> = BTreeMap::new();
    for g in range {
        let target = (g % t) as usize;
        let source = sources.of(target, g / t);
        *counts.entry((target as u16, source)).or_insert(0) += 1;
    }
    counts
        .into_iter()
        .map(|((target, source), count)| ClientGroup {
            target,
            source,
            count,
        })
        .collect()
}

/// Splits `n` into `parts` sizes that differ by at most one.
fn shares(n: u64, parts: u64) -> impl Iterator<Item = u64> {
    (0..parts).map(move |i| n / parts + u64::from(i < n % parts))
}

/// Plans the swarm.
///
/// `workers` is the number of local workers asked for (`None`: as many as
/// `per_worker` requires); with `agents`, it is ignored and each agent gets
/// as many workers as its share requires.
///
/// # Errors
/// When the swarm does not fit: too many clients per worker or per source.
pub fn plan(
    clients: u64,
    targets: &[SocketAddr],
    explicit_sources: Option<&[IpAddr]>,
    workers: Option<u32>,
    agents: &[String],
    per_worker: u64,
) -> anyhow::Result<Vec<WorkerPlan>> {
    if clients == 0 {
        bail!("--clients must be at least 1");
    }
    if targets.is_empty() {
        bail!("no --target given");
    }
    if targets.len() > usize::from(u16::MAX) {
        bail!("too many targets");
    }
    let per_worker = per_worker.max(1);
    let sources = Sources::new(targets, clients, explicit_sources)?;
    let mut places = Vec::new();
    if agents.is_empty() {
        let w = match workers {
            Some(0) => bail!("--workers must be at least 1"),
            Some(w) => u64::from(w),
            None => clients.div_ceil(per_worker),
        };
        let biggest = clients.div_ceil(w);
        if biggest > per_worker {
            bail!(
                "{biggest} clients per worker exceed the {per_worker} one process can hold here (open-file limit); use --workers {} or more",
                clients.div_ceil(per_worker)
            );
        }
        places.extend(shares(clients, w.min(clients)).map(|n| (Place::Local, n)));
    } else {
        for (agent, share) in agents.iter().zip(shares(clients, agents.len() as u64)) {
            let w = share.div_ceil(per_worker).max(1);
            places.extend(shares(share, w).map(|n| (Place::Agent(agent.clone()), n)));
        }
    }
    let mut start = 0;
    let mut out = Vec::new();
    for (place, n) in places {
        if n == 0 {
            continue;
        }
        out.push(WorkerPlan {
            place,
            groups: groups_of(start..start + n, targets.len(), &sources),
            first: start,
        });
        start += n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn source_ip_lists() {
        let v = parse_source_ips("127.0.0.2-127.0.0.4, 10.0.0.1").unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[2], "127.0.0.4".parse::<IpAddr>().unwrap());
        assert!(parse_source_ips("127.0.0.4-127.0.0.2").is_err());
        assert!(parse_source_ips("nope").is_err());
        assert!(parse_source_ips(",").is_err());
        assert!(parse_source_ips("10.0.0.0-10.2.0.0").is_err());
    }

    #[test]
    fn one_small_swarm_is_one_worker_without_binding() {
        let p = plan(100, &addrs(&["127.0.0.1:1"]), None, None, &[], PER_WORKER).unwrap();
        assert_eq!(
            p,
            [WorkerPlan {
                place: Place::Local,
                groups: vec![ClientGroup {
                    target: 0,
                    source: None,
                    count: 100
                }],
                first: 0,
            }]
        );
    }

    #[test]
    fn fifty_thousand_over_three_servers() {
        let targets = addrs(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        let p = plan(50_000, &targets, None, None, &[], PER_WORKER).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p.iter().map(WorkerPlan::clients).sum::<u64>(), 50_000);
        assert!(p.iter().all(|w| w.clients() <= PER_WORKER));
        // Every worker reaches every server; 16,667 clients per server take
        // two source addresses each.
        let mut pairs: BTreeMap<(u16, Option<IpAddr>), u64> = BTreeMap::new();
        for w in &p {
            assert!((0..3).all(|t| w.groups.iter().any(|g| g.target == t)));
            for g in &w.groups {
                *pairs.entry((g.target, g.source)).or_default() += u64::from(g.count);
            }
        }
        assert_eq!(pairs.len(), 6);
        assert!(pairs.values().all(|&n| n <= PER_SOURCE));
        assert!(pairs.keys().all(|(_, s)| s.is_some()));
    }

    #[test]
    fn many_clients_to_one_loopback_server_get_more_source_addresses() {
        let p = plan(
            60_000,
            &addrs(&["127.0.0.1:1"]),
            None,
            None,
            &[],
            PER_WORKER,
        )
        .unwrap();
        assert_eq!(p.len(), 4);
        let mut per_source: BTreeMap<Option<IpAddr>, u64> = BTreeMap::new();
        for g in p.iter().flat_map(|w| &w.groups) {
            *per_source.entry(g.source).or_default() += u64::from(g.count);
        }
        let counts: Vec<u64> = per_source.values().copied().collect();
        assert_eq!(counts, [12_000; 5]);
        assert!(per_source.contains_key(&Some("127.0.0.5".parse().unwrap())));
        // Not on a remote server: the addresses are not ours to pick.
        assert!(plan(30_000, &addrs(&["10.1.1.1:1"]), None, None, &[], PER_WORKER).is_err());
    }

    #[test]
    fn explicit_sources_round_robin() {
        let sources = parse_source_ips("127.0.0.2-127.0.0.3").unwrap();
        let p = plan(
            5,
            &addrs(&["127.0.0.1:1"]),
            Some(&sources),
            Some(1),
            &[],
            PER_WORKER,
        )
        .unwrap();
        let counts: Vec<(Option<IpAddr>, u32)> =
            p[0].groups.iter().map(|g| (g.source, g.count)).collect();
        assert_eq!(counts, [(Some(sources[0]), 3), (Some(sources[1]), 2)]);
    }

    #[test]
    fn worker_limits() {
        let t = addrs(&["127.0.0.1:1"]);
        assert!(plan(19_000, &t, None, Some(1), &[], PER_WORKER).is_err());
        assert_eq!(
            plan(19_000, &t, None, None, &[], PER_WORKER).unwrap().len(),
            2
        );
        assert_eq!(
            plan(10, &t, None, Some(4), &[], PER_WORKER).unwrap().len(),
            4
        );
        assert_eq!(
            plan(2, &t, None, Some(4), &[], PER_WORKER).unwrap().len(),
            2
        );
        assert!(plan(0, &t, None, None, &[], PER_WORKER).is_err());
    }

    #[test]
    fn agents_share_the_swarm() {
        let t = addrs(&["127.0.0.1:1", "127.0.0.1:2"]);
        let agents = vec!["a:1".to_owned(), "b:1".to_owned()];
        let p = plan(40_001, &t, None, None, &agents, PER_WORKER).unwrap();
        let a: u64 = p
            .iter()
            .filter(|w| w.place == Place::Agent("a:1".into()))
            .map(WorkerPlan::clients)
            .sum();
        let b: u64 = p
            .iter()
            .filter(|w| w.place == Place::Agent("b:1".into()))
            .map(WorkerPlan::clients)
            .sum();
        assert_eq!((a, b), (20_001, 20_000));
        assert_eq!(p.len(), 4);
    }
}
