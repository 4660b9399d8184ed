//! One function per command: call the API, then print a table, or the
//! server's JSON with `--json`.

use std::io::{self, Write};

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::cli::{Cli, Command, Data};
use crate::client::{encode, Client};
use crate::format::{self, Table};
use janus_core::api::{
    ClusterNodes, Draining, Kicked, Published, Sent, SessionInfo, SessionPage, Status, TopicDetail,
    TopicHistory, TopicList,
};

/// Runs the command the user asked for.
///
/// # Errors
/// The request failure (its [`crate::client::ClientError`] decides the exit
/// code) or a failure to write the output.
pub fn run(cli: &Cli) -> anyhow::Result<()> {
    let client = Client::new(&cli.server, cli.token.clone(), cli.timeout());
    let out = Output { json: cli.json };
    match &cli.command {
        Command::Status => status(&client, &out),
        Command::Cluster => {
            let (nodes, raw): (ClusterNodes, _) = call(&client, "GET", "/cluster", None)?;
            out.print(&raw, || cluster_table(&nodes))
        }
        Command::Topics {
            prefix,
            limit,
            sort,
            after,
        } => {
            let mut path = format!(
                "/topics?prefix={}&limit={limit}&sort={}",
                encode(prefix),
                sort.as_str()
            );
            if let Some(after) = after {
                path += &format!("&after={}", encode(after));
            }
            let (list, raw): (TopicList, _) = call(&client, "GET", &path, None)?;
            out.print(&raw, || topics_table(&list))
        }
        Command::Topic { name, limit, after } => {
            let mut path = format!("/topics/{}?limit={limit}", encode(name));
            if let Some(after) = after {
                path += &format!("&after={}", encode(after));
            }
            let (topic, raw): (TopicDetail, _) = call(&client, "GET", &path, None)?;
            out.print(&raw, || topic_text(&topic))
        }
        Command::History { name, since, limit } => {
            let mut path = format!("/topics/{}/history?limit={limit}", encode(name));
            if let Some(since) = since {
                path += &format!("&since={since}");
            }
            let (history, raw): (TopicHistory, _) = call(&client, "GET", &path, None)?;
            out.print(&raw, || history_text(&history))
        }
        Command::Sessions { limit, after, all } => sessions(&client, &out, *limit, after, *all),
        Command::Session { session } => {
            let path = format!("/sessions/{}", encode(session));
            let (session, raw): (SessionInfo, _) = call(&client, "GET", &path, None)?;
            out.print(&raw, || session_text(&session))
        }
        Command::Publish {
            topic,
            data,
            event,
            message_id,
        } => {
            let body = json!({
                "topic": topic,
                "event": event,
                "message_id": message_id,
                "data": data_value(data),
            });
            let (published, raw): (Published, _) = call(&client, "POST", "/publish", Some(&body))?;
            out.print(&raw, || {
                let n = published.reached;
                if published.cluster {
                    format!(
                        "published to {} through the cluster's broker: every node delivers it to \
                         its own subscribers (a cluster gives no count)\n",
                        published.topic
                    )
                } else {
                    format!(
                        "published to {}: reached {n} subscriber{}\n",
                        published.topic,
                        plural(n)
                    )
                }
            })
        }
        Command::Send {
            session,
            data,
            topic,
            event,
            message_id,
        } => {
            let body = json!({
                "topic": topic,
                "event": event,
                "message_id": message_id,
                "data": data_value(data),
            });
            let path = format!("/sessions/{}/send", encode(session));
            let (sent, raw): (Sent, _) = call(&client, "POST", &path, Some(&body))?;
            out.print(&raw, || {
                format!(
                    "sent to {} (queued deliveries now {})\n",
                    sent.token, sent.queue_depth
                )
            })
        }
        Command::Kick { session, reason } => {
            let mut path = format!("/sessions/{}", encode(session));
            if let Some(reason) = reason {
                path += &format!("?reason={}", encode(reason));
            }
            let (kicked, raw): (Kicked, _) = call(&client, "DELETE", &path, None)?;
            out.print(&raw, || {
                format!(
                    "kicked {}: it gets a `kicked` error and is disconnected\n",
                    kicked.kicked
                )
            })
        }
        Command::Drain => {
            let (draining, raw): (Draining, _) = call(&client, "POST", "/drain", None)?;
            out.print(&raw, || {
                format!(
                    "draining{}: the server stopped accepting, is telling its {} client{} \
                     server_shutdown, and exits once their queued messages are written\n",
                    if draining.draining {
                        ""
                    } else {
                        " (not confirmed)"
                    },
                    draining.connections,
                    plural(draining.connections)
                )
            })
        }
        Command::Top { interval } => crate::top::run(&client, *interval),
        Command::Subscribe {
            topics,
            client,
            count,
        } => crate::subscribe::run(&crate::subscribe::Subscription {
            addr: client,
            topics,
            json: cli.json,
            count: *count,
            timeout: cli.timeout(),
        }),
    }
}

/// Where and how results are printed.
struct Output {
    json: bool,
}

impl Output {
    /// Prints the server's JSON (pretty) with `--json`, otherwise `human()`.
    fn print(&self, raw: &str, human: impl FnOnce() -> String) -> anyhow::Result<()> {
        let text = if self.json {
            let value: serde_json::Value =
                serde_json::from_str(raw).context("the server's answer is not JSON")?;
            let mut text = serde_json::to_string_pretty(&value)?;
            text.push('\n');
            text
        } else {
            human()
        };
        let mut stdout = io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .context("writing the output")
    }
}

fn call<T: DeserializeOwned>(
    client: &Client,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(T, String)> {
    Ok(client.json(method, path, body)?)
}

/// DATA as JSON when it parses, otherwise as a string.
fn data_value(data: &Data) -> serde_json::Value {
    if data.string {
        return serde_json::Value::String(data.data.clone());
    }
    serde_json::from_str(&data.data)
        .unwrap_or_else(|_| serde_json::Value::String(data.data.clone()))
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn status(client: &Client, out: &Output) -> anyhow::Result<()> {
    let (s, raw): (Status, _) = call(client, "GET", "/status", None)?;
    out.print(&raw, || status_text(&s))
}

/// The human form of `/status`.
pub fn status_text(s: &Status) -> String {
    let state = if s.draining {
        "draining"
    } else if s.ready {
        "ready"
    } else {
        "starting"
    };
    let mut t = Table::new(&["", ""]);
    let mut kv = |k: &str, v: String| t.row(vec![k.to_owned(), v]);
    kv(
        "server",
        format!(
            "janus-server {}, {state}, up {} (since {})",
            s.version,
            format::duration(s.uptime_s),
            s.started_at
        ),
    );
    kv(
        "listening",
        format!(
            "clients {}, admin {} ({})",
            s.listen.clients,
            s.listen.admin.as_deref().unwrap_or("-"),
            s.admin_auth
        ),
    );
    kv(
        "connections",
        format!(
            "{} now, {} peak, capacity {} ({} accepted, {} refused)",
            format::count(s.connections),
            format::count(s.connections_peak),
            format::count(s.capacity),
            format::count(s.connections_total),
            format::count(s.connections_refused)
        ),
    );
    kv(
        "sessions",
        format!(
            "{}, topics {} of {}, subscriptions {}",
            format::count(s.sessions),
            format::count(s.topics),
            format::count(s.limits.max_topics),
            format::count(s.subscriptions)
        ),
    );
    let r = &s.refused;
    kv(
        "refused",
        format!(
            "{} per address (limit {}), {} at capacity, {} out of file descriptors (limit {}), \
             {} new topics",
            format::count(r.per_ip),
            s.limits
                .max_connections_per_ip
                .map_or_else(|| "none".to_owned(), format::count),
            format::count(r.max_connections),
            format::count(r.fds),
            s.limits
                .open_files
                .map_or_else(|| "?".to_owned(), format::count),
            format::count(r.max_topics)
        ),
    );
    kv(
        "published",
        format!(
            "{} message{} ({})",
            format::count(s.messages_published),
            plural(s.messages_published),
            format::rate(s.publish_rate)
        ),
    );
    kv(
        "delivered",
        format!(
            "{} of {} queued since start ({}), {} dropped",
            format::count(s.deliveries_sent),
            format::count(s.deliveries_enqueued),
            format::rate(s.delivery_rate),
            format::count(s.deliveries_dropped)
        ),
    );
    kv(
        "bytes out",
        format!(
            "{} ({}/s)",
            format::bytes(s.bytes_out as f64),
            format::bytes(s.bytes_out_rate)
        ),
    );
    kv(
        "latency",
        format!(
            "p50 {}, p99 {}, mean {} ({} deliveries, queue to socket)",
            format::latency(s.delivery_latency.p50_ms),
            format::latency(s.delivery_latency.p99_ms),
            s.delivery_latency
                .mean_ms
                .map_or("-".to_owned(), |m| format!("{m:.2} ms")),
            format::count(s.delivery_latency.count)
        ),
    );
    if let Some(b) = &s.broker {
        kv(
            "broker",
            format!(
                "{} as node {}, {}, {} reconnect{}{}",
                b.url,
                b.node_id,
                if b.connected {
                    "connected"
                } else {
                    "NOT connected"
                },
                format::count(b.reconnects),
                plural(b.reconnects),
                b.last_error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" (last error: {e})"))
            ),
        );
        kv(
            "broker traffic",
            format!(
                "{} in, {} out, {} unavailable, {} recovered, {} gaps; {} topics subscribed; \
                 publish round trip p50 {}, p99 {}",
                format::count(b.messages_in),
                format::count(b.messages_out),
                format::count(b.publish_failures),
                format::count(b.recovered),
                format::count(b.gaps),
                format::count(b.topics),
                format::latency(b.publish_rtt_p50_ms),
                format::latency(b.publish_rtt_p99_ms)
            ),
        );
    }
    kv("slow consumers", format::count(s.slow_consumers));
    let r = &s.resume;
    kv(
        "resumes",
        format!(
            "{} recovered, {} not recovered, {} unknown session; {} replayed; \
             {} detached now ({} expired, {} resumed on another node, {} not kept: \
             max-detached-sessions)",
            format::count(r.recovered),
            format::count(r.not_recovered),
            format::count(r.unknown_session),
            format::count(r.replayed),
            format::count(r.detached),
            format::count(r.expired),
            format::count(r.resumed_elsewhere),
            format::count(r.not_kept)
        ),
    );
    let h = &s.history;
    kv(
        "history",
        format!(
            "{} message{}, {} of {} (per topic {}, {} s)",
            format::count(h.entries),
            plural(h.entries),
            format::bytes(h.bytes as f64),
            format::bytes(h.max_bytes as f64),
            format::count(h.size),
            h.ttl_s
        ),
    );
    kv("errors sent", format::errors(&s.errors));
    let mut text = String::new();
    for line in t.lines(0).into_iter().skip(1) {
        text.push_str(&line);
        text.push('\n');
    }
    text.push_str(&format!(
        "(rates and latency over the last {:.0} s)\n",
        s.rate_window_s
    ));
    text
}

/// The human form of `/cluster`.
fn cluster_table(list: &ClusterNodes) -> String {
    let mut t = Table::new(&["NODE", ">CLIENTS", ">TOPICS", "ADMIN", ">UP"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for node in &list.nodes {
        let this = if node.node_id == list.this_node {
            " *"
        } else {
            ""
        };
        t.row(vec![
            format!("{}{this}", node.node_id),
            format::count(node.clients),
            format::count(node.topics),
            node.admin.clone().unwrap_or_else(|| "-".to_owned()),
            format::duration(now.saturating_sub(node.started_at)),
        ]);
    }
    let n = list.nodes.len() as u64;
    t.render() + &format!("({n} live node{}; * answered)\n", plural(n))
}

fn topics_table(list: &TopicList) -> String {
    let mut t = Table::new(&["TOPIC", ">SUBSCRIBERS", ">PUBLISHED"]);
    for topic in &list.topics {
        t.row(vec![
            topic.name.clone(),
            format::count(topic.subscribers),
            format::count(topic.published),
        ]);
    }
    let mut text = t.render();
    let shown = list.topics.len() as u64;
    if let Some(next) = &list.next {
        text += &format!(
            "({shown} shown of {} topics; next page: --after {next})\n",
            format::count(list.total)
        );
    } else if list.truncated {
        text += &format!(
            "({shown} shown of {} topics; raise --limit or narrow --prefix)\n",
            format::count(list.total)
        );
    } else {
        text += &format!("({shown} topic{})\n", plural(shown));
    }
    text
}

fn topic_text(topic: &TopicDetail) -> String {
    let mut text = format!(
        "topic {}: {} subscriber{}, {} published\n\n",
        topic.name,
        format::count(topic.subscribers),
        plural(topic.subscribers),
        format::count(topic.published)
    );
    let mut t = Table::new(&["TOKEN", "PEER", ">QUEUED"]);
    for s in &topic.sessions {
        t.row(vec![
            s.token.clone(),
            s.peer.clone(),
            format::count(s.queue_depth),
        ]);
    }
    text += &t.render();
    if topic.truncated {
        text += &format!(
            "({} of {} subscribers shown; next page: --after {})\n",
            topic.sessions.len(),
            topic.subscribers,
            topic.next.as_deref().unwrap_or("-")
        );
    }
    text
}

fn sessions(
    client: &Client,
    out: &Output,
    limit: usize,
    after: &Option<String>,
    all: bool,
) -> anyhow::Result<()> {
    let mut cursor = after.clone();
    let mut t = Table::new(&[
        "TOKEN",
        "PEER",
        ">CONNECTED",
        ">SUBS",
        ">QUEUED",
        ">DELIVERED",
        "STATE",
    ]);
    let mut pages = Vec::new();
    let mut total;
    let mut shown = 0u64;
    let next = loop {
        let mut path = format!("/sessions?limit={limit}");
        if let Some(c) = &cursor {
            path += &format!("&after={}", encode(c));
        }
        let (page, raw): (SessionPage, _) = call(client, "GET", &path, None)?;
        total = page.total;
        for s in &page.sessions {
            shown += 1;
            t.row(vec![
                s.token.clone(),
                s.peer.clone(),
                format::duration(s.connected_s),
                format::count(s.subscriptions.len() as u64),
                format::count(s.queue_depth),
                format::count(s.delivered),
                session_state(s),
            ]);
        }
        pages.push(raw);
        match page.next {
            Some(next) if all => cursor = Some(next),
            other => break other,
        }
    };
    if out.json {
        if pages.len() == 1 {
            return out.print(&pages[0], String::new);
        }
        // Several pages: one JSON object with every session.
        let mut sessions = Vec::new();
        for raw in &pages {
            let mut page: serde_json::Value = serde_json::from_str(raw)?;
            if let Some(serde_json::Value::Array(list)) =
                page.get_mut("sessions").map(serde_json::Value::take)
            {
                sessions.extend(list);
            }
        }
        let merged = json!({"total": total, "sessions": sessions, "next": null});
        return out.print(&merged.to_string(), String::new);
    }
    let mut text = t.render();
    text += &format!(
        "({shown} of {} session{}",
        format::count(total),
        plural(total)
    );
    if let Some(next) = next {
        text += &format!("; next page: --after {next}, or --all");
    }
    text += ")\n";
    out.print("", || text)
}

/// A session's state: `attached`, or `detached 3s (57s left)`.
fn session_state(s: &SessionInfo) -> String {
    match (s.detached_ms, s.expires_in_ms) {
        (Some(waited), left) => format!(
            "detached {} ({} left)",
            format::duration(waited / 1000),
            format::duration(left.unwrap_or(0) / 1000)
        ),
        (None, _) => s.state.clone(),
    }
}

fn history_text(h: &TopicHistory) -> String {
    let mut text = format!(
        "topic {}: epoch {}, offsets {}..={}, {} message{} held ({})\n\n",
        h.name,
        h.epoch.as_deref().unwrap_or("-"),
        h.first,
        h.last,
        format::count(h.count),
        plural(h.count),
        format::bytes(h.bytes as f64)
    );
    let mut t = Table::new(&[">OFFSET", "DELIVERY"]);
    for m in &h.messages {
        t.row(vec![m.offset.to_string(), m.delivery.get().to_owned()]);
    }
    text += &t.render();
    if let Some(next) = h.next {
        text += &format!("(more: --since {next})\n");
    }
    text
}

fn session_text(s: &SessionInfo) -> String {
    let mut t = Table::new(&["", ""]);
    t.row(vec!["token".into(), s.token.clone()]);
    t.row(vec!["peer".into(), s.peer.clone()]);
    t.row(vec!["transport".into(), s.transport.clone()]);
    t.row(vec![
        "connected".into(),
        format!(
            "{} ({} ago)",
            s.connected_at,
            format::duration(s.connected_s)
        ),
    ]);
    t.row(vec!["state".into(), session_state(s)]);
    t.row(vec!["queued".into(), format::count(s.queue_depth)]);
    t.row(vec!["delivered".into(), format::count(s.delivered)]);
    t.row(vec![
        "subscriptions".into(),
        if s.subscriptions.is_empty() {
            "none".into()
        } else {
            format!("{}: {}", s.subscriptions.len(), s.subscriptions.join(", "))
        },
    ]);
    let mut text = String::new();
    for line in t.lines(0).into_iter().skip(1) {
        text.push_str(&line);
        text.push('\n');
    }
    text
}
