//! The admin page (`/ui`) and browser WebSocket clients (X2), in real
//! headless Chromium driven over WebDriver. Skipped, with a message, only
//! where Chromium is not installed and `JANUS_REQUIRE_BROWSER` is unset.

use std::net::SocketAddr;
use std::path::PathBuf;

use janus_core::ServerMessage;
use janus_server::session::CloseReason;
use janus_server::Config;
use janus_tests::browser::Browser;
use janus_tests::{publish_legacy, test_config, wait_until, Client, TestServer};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn loopback() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn config() -> Config {
    Config {
        admin_listen: loopback(),
        ws_listen: loopback(),
        ..test_config()
    }
}

fn screenshot_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_page_is_live_and_its_subscriber_pane_receives() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let server = TestServer::start_with(config()).await;
    let shared = server.shared().clone();
    let admin = shared.admin_addr().expect("admin API on");
    let ws = shared.ws_addr().expect("WebSocket on");
    browser
        .open(&format!("http://{admin}/ui"), "#st-state", "ready")
        .await;
    let url = browser
        .client
        .execute("return document.getElementById('sub-url').value", vec![])
        .await
        .expect("read the address");
    assert_eq!(url, Value::from(format!("ws://127.0.0.1:{}/", ws.port())));

    // The subscriber pane subscribes over WebSocket.
    browser.fill("#sub-topic", "browser-news").await;
    browser.click("#sub-connect").await;
    browser
        .wait_text("#sub-state", "the subscription", |t| {
            t == "subscribed to browser-news"
        })
        .await;
    wait_until("the browser's subscription", || {
        shared.topics.subscription_count() == 1
    })
    .await;

    // A publish over the TCP protocol appears in the page.
    publish_legacy(
        server.addr(),
        r#"{"topic":"browser-news","event":"e","message_id":"from-tcp","data":{"via":"tcp"}}"#,
    )
    .await;
    browser
        .wait_text("#sub-log", "the TCP publish in the page", |t| {
            t.contains("#from-tcp") && t.contains(r#"{"via":"tcp"}"#)
        })
        .await;

    // And one through the page's own publish form.
    browser.fill("#pub-topic", "browser-news").await;
    browser.fill("#pub-id", "from-form").await;
    browser.fill("#pub-data", r#"{"via":"form"}"#).await;
    browser.click("#pub-send").await;
    browser
        .wait_text("#pub-result", "the publish answer", |t| {
            t == "published to browser-news: reached 1 subscribers"
        })
        .await;
    browser
        .wait_text("#sub-log", "the form's publish in the page", |t| {
            t.contains("#from-form") && t.contains(r#"{"via":"form"}"#)
        })
        .await;

    // The live tables show the topic and the browser's WebSocket session.
    browser
        .wait_text("#topics-body", "the topic listed", |t| {
            t.contains("browser-news\t1\t2") || t.contains("browser-news 1 2")
        })
        .await;
    browser
        .wait_text("#sessions-body", "the WebSocket session listed", |t| {
            t.contains("ws") && t.contains("browser-news")
        })
        .await;
    browser
        .wait_text("#st-published", "the publish count", |t| t == "2")
        .await;
    browser.screenshot(&screenshot_path("admin-ui.png")).await;
    browser.finish().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_button_disconnects_a_session_behind_the_token_prompt() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let server = TestServer::start_with(Config {
        admin_token: Some("s3cret-admin".into()),
        ..config()
    })
    .await;
    let admin = server.shared().admin_addr().expect("admin API on");
    let mut victim = Client::connect(server.addr()).await;
    victim.subscribe("kick-me").await;
    let mut bystander = Client::connect(server.addr()).await;
    bystander.subscribe("kick-me").await;

    browser
        .client
        .goto(&format!("http://{admin}/ui"))
        .await
        .expect("open the page");
    // Without the token the page asks for it.
    browser
        .wait_text("#error", "the token prompt", |t| {
            t == "this server needs its admin token"
        })
        .await;
    browser.fill("#token", "s3cret-admin").await;
    browser.click("#token-save").await;
    browser
        .wait_text("#st-state", "the status", |t| t == "ready")
        .await;

    let row = format!("#sessions-body tr[data-token='{}']", victim.token);
    browser
        .wait_text(&row, "the victim's row", |t| t.contains("kick-me"))
        .await;
    browser.click(&format!("{row} button.kick")).await;
    let reason = victim.expect_error("kicked").await;
    assert!(!reason.is_empty());
    victim.expect_closed().await;
    browser
        .wait_text("#sessions-body", "the row gone", |t| {
            !t.contains(&victim.token) && t.contains(&bystander.token)
        })
        .await;
    bystander.expect_open().await;
    browser
        .screenshot(&screenshot_path("admin-ui-kick.png"))
        .await;
    browser.finish().await;
    server.stop().await;
}

/// Serves `page` to every HTTP request on `listener`.
fn serve_page(listener: tokio::net::TcpListener, page: String) {
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let page = page.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
}

/// A browser page of the test's own: a bare WebSocket client that
/// subscribes to `page` and lists every message it receives.
const CLIENT_PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>client</title>
<p id="state">connecting</p><ol id="log"></ol>
<script>
window.ws = new WebSocket("WS_URL");
ws.onopen = () => ws.send(JSON.stringify({action: "subscribe", data: "page"}));
ws.onmessage = (e) => {
  if (e.data === "ACK") { document.getElementById("state").textContent = "subscribed"; return; }
  const li = document.createElement("li");
  li.textContent = e.data;
  document.getElementById("log").appendChild(li);
};
ws.onclose = (e) => { document.getElementById("state").textContent = "closed " + e.code; };
</script>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_websocket_client_receives_in_order_and_publishes() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    // The page's origin is the only one allowed: the browser's handshake
    // carries it, so this also proves the origin check lets it in.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let page = listener.local_addr().expect("address");
    let server = TestServer::start_with(Config {
        ws_listen: loopback(),
        ws_allowed_origins: vec![format!("http://{page}")],
        ..test_config()
    })
    .await;
    let shared = server.shared().clone();
    let ws = shared.ws_addr().expect("WebSocket on");
    serve_page(
        listener,
        CLIENT_PAGE.replace("WS_URL", &format!("ws://{ws}/")),
    );
    browser
        .open(&format!("http://{page}/"), "#state", "subscribed")
        .await;

    let mut publisher = Client::connect(server.addr()).await;
    for id in 1..=50 {
        let data = format!("{{\"n\":{id}}}");
        publisher
            .publish_acked("page", &id.to_string(), &data)
            .await;
    }
    browser
        .wait_text("#log", "50 deliveries", |t| {
            t.contains(r#""message_id":"50""#)
        })
        .await;
    let shown = browser
        .client
        .execute(
            "return Array.from(document.querySelectorAll('#log li')).map(li => li.textContent)",
            vec![],
        )
        .await
        .expect("read the log");
    let shown: Vec<String> = serde_json::from_value(shown).expect("strings");
    assert_eq!(shown.len(), 51, "the hello and 50 deliveries, nothing else");
    assert!(shown[0].starts_with(r#"{"timestamp":["#) && shown[0].contains(r#""token":""#));
    for (i, text) in shown[1..].iter().enumerate() {
        let id = i + 1;
        match ServerMessage::parse(text).expect("a delivery") {
            ServerMessage::Delivery(d) => {
                assert_eq!(d.message_id, id.to_string(), "in order");
                assert_eq!(d.data, format!("{{\"n\":{id}}}"));
            }
            other => panic!("expected delivery {id}, got {other:?}"),
        }
    }

    // The browser publishes (X3) to a TCP subscriber.
    let mut tcp = Client::connect(server.addr()).await;
    tcp.subscribe("from-browser").await;
    browser
        .client
        .execute(
            r#"ws.send(JSON.stringify({action: "publish", data: {topic: "from-browser", message_id: "b1", data: [1, 2]}}))"#,
            vec![],
        )
        .await
        .expect("publish from the page");
    match tcp.recv().await {
        ServerMessage::Delivery(d) => {
            assert_eq!(d.message_id, "b1");
            assert_eq!(d.data, "[1,2]");
        }
        other => panic!("expected the browser's publish, got {other:?}"),
    }

    // A kick closes the browser's socket with the policy code.
    let session = shared.sessions.page(None, 10);
    let browser_session = session
        .iter()
        .find(|s| s.transport == janus_server::session::Transport::WebSocket)
        .expect("the browser's session")
        .clone();
    assert!(shared.close_session(&browser_session, &CloseReason::Kicked("bye".into())));
    browser
        .wait_text("#state", "the close", |t| t == "closed 1008")
        .await;
    let last = browser
        .client
        .execute(
            "const l = document.querySelectorAll('#log li'); return l[l.length - 1].textContent",
            vec![],
        )
        .await
        .expect("read the log");
    assert!(
        last.as_str()
            .is_some_and(|t| t.contains(r#""error":"kicked""#)),
        "{last}"
    );
    browser.finish().await;
    server.stop().await;
}
