//! Three nodes and a real nats-server (docs/protocol.md §21): push, batch, send and mentions
//! across nodes with real WebSocket devices; duplicates under both policies; a device that is
//! nowhere; the engine going away and coming back; a node that dies.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::common::*;
use crate::harness::*;

/// nats-server and three nodes, all up and hearing each other.
async fn three(args: &[&str]) -> Option<(Nats, [Daemon; 3])> {
    let bin = nats_or_skip()?;
    let nats = Nats::start(&bin);
    let nodes = [
        node(&nats, "n1", args),
        node(&nats, "n2", args),
        node(&nats, "n3", args),
    ];
    wait_all_up(&[&nodes[0], &nodes[1], &nodes[2]]).await;
    Some((nats, nodes))
}

fn push_body(user: &str, data: Value) -> Value {
    json!({"user_id": user, "data": data, "timestamp": 1704067200})
}

#[tokio::test]
async fn push_batch_and_send_reach_devices_on_other_nodes() {
    let Some((_nats, [n1, n2, n3])) = three(&[]).await else {
        return;
    };
    let mut a = device_on(&n1, "a").await;
    let mut b = device_on(&n2, "b").await;

    // A push to a device on another node: success once written there, the local frame.
    let r = n3.push(&push_body("a", json!({"message": "hello"}))).await;
    assert_eq!(
        r.assert_json(200),
        json!({"status":"success","message":"Message delivered"})
    );
    let got = a.recv_json().await;
    assert_eq!(got["message"], "hello");
    assert_eq!(got["user_id"], "a");
    assert!(
        is_uuid(got["correlation_id"].as_str().unwrap_or("")),
        "{got}"
    );
    assert_eq!(
        got["original_sender"],
        json!({"user_id":"a","timestamp":1704067200})
    );

    // A batch from n1: local, remote, nowhere, remote again; results in input order and the
    // remote device's items in index order.
    let r = n1
        .batch(&json!([
            {"user_id":"a","data":{"i":0}},
            {"user_id":"b","data":{"i":1}},
            {"user_id":"nobody","data":{"i":2}},
            {"user_id":"b","data":{"i":3}},
        ]))
        .await;
    let v = r.assert_json(200);
    assert_eq!(
        v,
        json!({"results":[
            {"index":0,"user_id":"a","success":true},
            {"index":1,"user_id":"b","success":true},
            {"index":2,"user_id":"nobody","success":false,"error":"not_connected"},
            {"index":3,"user_id":"b","success":true},
        ]})
    );
    assert_eq!(a.recv_json().await["i"], 0);
    assert_eq!(b.recv_json().await["i"], 1);
    assert_eq!(b.recv_json().await["i"], 3);

    // A send from n3 to a device on n1: the device's answers relayed until the final one.
    let mut s = n3
        .send(&json!({"user_id":"a","data":{"message":"q","correlation_id":"c1"},"event_type":"message"}))
        .await;
    s.assert_stream_head();
    let req = a.recv_json().await;
    assert_eq!(req["correlation_id"], "c1");
    let answers = [
        r#"{"type":"response","correlation_id":"c1","data":{"n":1}}"#,
        r#"{"type": "chunk", "correlation_id": "c1", "text": "é"}"#,
        r#"{"type":"response","correlation_id":"c1","is_final":true}"#,
    ];
    for text in answers {
        a.send_text(text).await;
        let ev = s.next_event(step()).await;
        assert_eq!(ev.event.as_deref(), Some("message"));
        assert_eq!(ev.data, text, "the device's text as it arrived");
    }
    s.expect_end(step()).await;
    // The stream's id is free on both nodes once it ended.
    let mut again = n3
        .send(&json!({"user_id":"a","data":{"correlation_id":"c1"}}))
        .await;
    again.assert_stream_head();
    a.recv_json().await;
    a.send_text(r#"{"correlation_id":"c1","is_final":true}"#)
        .await;
    again.next_event(step()).await;
    again.expect_end(step()).await;

    let m = cluster_metrics(&n3).await;
    assert!(m["requests"]["push"].as_u64() >= Some(1), "{m}");
    assert!(m["requests"]["send"].as_u64() >= Some(2), "{m}");
    let m = cluster_metrics(&n1).await;
    assert!(m["served"]["push"].as_u64() >= Some(1), "{m}");
    assert!(m["served"]["send"].as_u64() >= Some(2), "{m}");
    assert_eq!(m["present"], 1, "{m}");
    // The same in Prometheus text.
    let text = n3.get("/metrics?format=prometheus").await.text();
    for line in [
        "wssed_cluster_up 1\n",
        "wssed_cluster_peers 2\n",
        "wssed_cluster_requests_total{op=\"push\"} ",
        "wssed_cluster_errors_total{reason=\"timeout\"} 0\n",
        "wssed_cluster_reconnects_total 0\n",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
}

#[tokio::test]
async fn a_mention_reaches_the_bot_on_another_node() {
    let Some((_nats, [n1, _n2, n3])) = three(&["--public-accounts", "ci_bot"]).await else {
        return;
    };
    let mut bot = device_on(&n3, "ci_bot").await;
    let r = n1
        .push(&push_body(
            "alice",
            json!({"message": "please run @ci_bot"}),
        ))
        .await;
    assert_eq!(
        r.assert_json(200),
        json!({"status":"success","message":"Message delivered","routed_to":"ci_bot"})
    );
    let got = bot.recv_json().await;
    assert_eq!(got["user_id"], "alice", "{got}");
    assert_eq!(got["original_sender"]["user_id"], "alice");

    // A send that mentions the bot streams the bot's answers.
    let mut s = n1
        .send(&json!({"user_id":"alice","data":{"message":"hey @ci_bot","correlation_id":"m1"}}))
        .await;
    s.assert_stream_head();
    bot.recv_json().await;
    let answer = r#"{"correlation_id":"m1","is_final":true,"text":"ok"}"#;
    bot.send_text(answer).await;
    assert_eq!(s.next_event(step()).await.data, answer);
    s.expect_end(step()).await;
}

#[tokio::test]
async fn a_device_nowhere_is_partial_at_once() {
    let Some((_nats, [n1, _n2, _n3])) = three(&["--cluster-timeout-secs", "10"]).await else {
        return;
    };
    // No responders is an answer from NATS, not a timeout: far under cluster_timeout_secs.
    for _ in 0..5 {
        let started = Instant::now();
        let r = n1.push(&push_body("nobody", json!({}))).await;
        let took = started.elapsed();
        assert_eq!(
            r.assert_json(200),
            json!({"status":"partial","message":"User not connected"})
        );
        assert!(took < Duration::from_secs(2), "partial took {took:?}");
    }
    let mut s = n1
        .send(&json!({"user_id":"nobody","data":{"correlation_id":"x1"}}))
        .await;
    s.assert_stream_head();
    s.expect_error_end("User not connected", "x1", step()).await;
    let m = cluster_metrics(&n1).await;
    assert!(m["no_responders"].as_u64() >= Some(6), "{m}");
}

#[tokio::test]
async fn a_duplicate_on_another_node_is_refused_under_reject() {
    let Some((_nats, [n1, n2, n3])) = three(&[]).await else {
        return;
    };
    let mut first = device_on(&n1, "dup").await;
    let mut newcomer = Device::connect(&n2, "user_id=dup").await;
    let (code, reason) = newcomer.expect_close(step()).await;
    assert_eq!((code, reason.as_str()), (1008, "User already connected"));
    wait_until(step(), "n2 counts the newcomer out", || async {
        n2.connections().await == 0
    })
    .await;
    // The first session keeps the id and its traffic.
    let r = n3.push(&push_body("dup", json!({"still": "first"}))).await;
    assert_eq!(r.assert_json(200)["status"], "success");
    assert_eq!(first.recv_json().await["still"], "first");
    assert_eq!(n1.connections().await, 1);
    let m = cluster_metrics(&n2).await;
    assert_eq!(m["duplicates_closed"], 1, "{m}");
}

#[tokio::test]
async fn a_duplicate_on_another_node_replaces_the_old_one_under_replace() {
    let Some((_nats, [n1, n2, n3])) = three(&["--on-duplicate", "replace"]).await else {
        return;
    };
    let mut old = device_on(&n1, "dup").await;
    let mut new = device_on(&n2, "dup").await;
    let (code, reason) = old.expect_close(step()).await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, "Replaced by new connection")
    );
    wait_until(step(), "n1 counts the old session out", || async {
        n1.connections().await == 0
    })
    .await;
    let r = n3.push(&push_body("dup", json!({"to": "new"}))).await;
    assert_eq!(r.assert_json(200)["status"], "success");
    assert_eq!(new.recv_json().await["to"], "new");
    assert_eq!(present(&n1).await, 0);
}

#[tokio::test]
async fn ids_that_are_hostile_to_subjects_work_across_nodes() {
    let Some((_nats, [n1, n2, _n3])) = three(&[]).await else {
        return;
    };
    // Subject separators and wildcards, a space, a C1 character, a 4-byte character.
    let ids = [
        "a.b",
        "*",
        ">",
        "x y",
        "c1\u{85}",
        "🦀",
        "wssed.dev.61.push",
    ];
    let mut devices = Vec::new();
    for id in ids {
        devices.push(device_on(&n1, id).await);
    }
    for (id, dev) in ids.iter().zip(devices.iter_mut()) {
        let r = n2.push(&push_body(id, json!({"for": id}))).await;
        assert_eq!(r.assert_json(200)["status"], "success", "{id:?}");
        let got = dev.recv_json().await;
        assert_eq!(got["for"], *id);
        assert_eq!(got["user_id"], *id);
    }
    // A near miss is nobody.
    let r = n2.push(&push_body("a", json!({}))).await;
    assert_eq!(r.assert_json(200)["status"], "partial");
}

#[tokio::test]
async fn a_stream_to_another_node_ends_as_a_local_one_would() {
    let Some((_nats, [n1, n2, _n3])) = three(&["--send-timeout-secs", "1"]).await else {
        return;
    };
    let mut a = device_on(&n1, "a").await;
    // Timeout.
    let mut s = n2
        .send(&json!({"user_id":"a","data":{"correlation_id":"t1"}}))
        .await;
    s.assert_stream_head();
    a.recv_json().await;
    s.expect_error_end("Timeout waiting for response", "t1", t(5.0))
        .await;
    // A correlation id waiting on the device's node is 409 from any node.
    let held = n1
        .send(&json!({"user_id":"a","data":{"correlation_id":"t2"}}))
        .await;
    held.assert_stream_head();
    a.recv_json().await;
    let r = n2
        .post(
            "/sse/send",
            &json!({"user_id":"a","data":{"correlation_id":"t2"}}).to_string(),
        )
        .await;
    r.assert_detail(409);
    drop(held);
    // The device leaving.
    let mut s = n2
        .send(&json!({"user_id":"a","data":{"correlation_id":"t3"}}))
        .await;
    s.assert_stream_head();
    a.recv_json().await;
    a.close().await;
    s.expect_error_end("User disconnected", "t3", step()).await;
}

#[tokio::test]
async fn an_upstream_that_leaves_frees_the_id_on_the_devices_node() {
    let Some((_nats, [n1, n2, _n3])) = three(&[]).await else {
        return;
    };
    let mut a = device_on(&n1, "a").await;
    let s = n2
        .send(&json!({"user_id":"a","data":{"correlation_id":"u1"}}))
        .await;
    s.assert_stream_head();
    a.recv_json().await;
    s.http.reset();
    // n2 sees the caller gone and tells n1, which frees the id: a new stream with it opens.
    let deadline = Instant::now() + step();
    loop {
        let again = n1
            .send(&json!({"user_id":"a","data":{"correlation_id":"u1"}}))
            .await;
        if again.head.status == 200 {
            a.recv_json().await;
            break;
        }
        assert_eq!(again.head.status, 409);
        assert!(
            Instant::now() < deadline,
            "the id was never freed on the device's node"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn without_the_engine_local_devices_work_and_others_get_503() {
    let Some((mut nats, [n1, n2, _n3])) = three(&[]).await else {
        return;
    };
    let mut a = device_on(&n1, "a").await;
    let mut b = device_on(&n2, "b").await;
    nats.kill();
    wait_until(step(), "n1 sees the link down", || async {
        cluster_health(&n1).await["state"] == "down"
    })
    .await;
    // Health and the self-check never depend on NATS.
    let h = n1.health().await;
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["connections"], 1);
    // Local: as without a cluster.
    let r = n1.push(&push_body("a", json!({"local": 1}))).await;
    assert_eq!(r.assert_json(200)["status"], "success");
    assert_eq!(a.recv_json().await["local"], 1);
    // Elsewhere: 503 cluster_unavailable, never a false partial.
    let r = n1.push(&push_body("b", json!({"lost": 1}))).await;
    assert_eq!(
        r.assert_json(503),
        json!({"status":"error","message":"Cluster unavailable","error":"cluster_unavailable"})
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    let r = n1.push(&push_body("nobody", json!({}))).await;
    assert_eq!(
        r.status, 503,
        "nobody may be on a node that cannot be asked"
    );
    let v = n1
        .batch(&json!([{"user_id":"a","data":{"i":1}},{"user_id":"b","data":{"i":2}}]))
        .await
        .assert_json(200);
    assert_eq!(v["results"][0]["success"], true);
    assert_eq!(v["results"][1]["error"], "cluster_unavailable");
    assert_eq!(a.recv_json().await["i"], 1);
    let r = n1
        .post("/sse/send", &json!({"user_id":"b","data":{}}).to_string())
        .await;
    assert_eq!(r.assert_json(503)["error"], "cluster_unavailable");
    // A new device connects meanwhile, on its node alone.
    let mut c = n1.device("c").await;
    let r = n1.push(&push_body("c", json!({"new": 1}))).await;
    assert_eq!(r.assert_json(200)["status"], "success");
    assert_eq!(c.recv_json().await["new"], 1);

    // The engine comes back: subscriptions are restored, remote delivery resumes.
    nats.restart();
    let back = Instant::now();
    wait_until(t(10.0), "remote delivery is back", || async {
        n1.push(&push_body("b", json!({"back": 1}))).await.status == 200
    })
    .await;
    eprintln!(
        "remote delivery back {:?} after the restart",
        back.elapsed()
    );
    assert_eq!(b.recv_json().await["back"], 1);
    // The device that connected while the engine was away is present too.
    wait_until(step(), "c present", || async {
        n2.push(&push_body("c", json!({"x": 1}))).await.json()["status"] == "success"
    })
    .await;
    assert_eq!(c.recv_json().await["x"], 1);
    let m = cluster_metrics(&n1).await;
    assert!(m["reconnects"].as_u64() >= Some(1), "{m}");
    assert!(m["errors"]["unavailable"].as_u64() >= Some(3), "{m}");
}

#[tokio::test]
async fn the_devices_of_a_dead_node_are_nowhere() {
    let Some((_nats, [n1, mut n2, _n3])) = three(&[]).await else {
        return;
    };
    let _b = device_on(&n2, "b").await;
    let r = n1.push(&push_body("b", json!({}))).await;
    assert_eq!(r.assert_json(200)["status"], "success");
    n2.signal("KILL");
    n2.wait_exit(step()).await.expect("n2 exits");
    // Its connection to NATS drops with it, and its subscriptions with the connection.
    wait_until(step(), "b is nowhere", || async {
        n1.push(&push_body("b", json!({}))).await.json()["status"] == "partial"
    })
    .await;
}

#[tokio::test]
async fn nodes_present_the_cluster_token_and_a_node_without_it_stays_down() {
    let Some(bin) = nats_or_skip() else {
        return;
    };
    let nats = Nats::start_with(&bin, &["--auth", "s3cret-nats-token"]);
    let n1 = node(&nats, "n1", &["--cluster-token", "s3cret-nats-token"]);
    let n2 = node(&nats, "n2", &["--cluster-token", "s3cret-nats-token"]);
    let outsider = node(&nats, "n3", &["--cluster-token", "wrong"]);
    wait_all_up(&[&n1, &n2]).await;
    let mut a = device_on(&n2, "a").await;
    let r = n1.push(&push_body("a", json!({"with": "token"}))).await;
    assert_eq!(r.assert_json(200)["status"], "success");
    assert_eq!(a.recv_json().await["with"], "token");
    // The node with the wrong token never joins: it serves its own devices, and answers 503
    // for the others, never partial.
    let h = outsider.health().await;
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["cluster"]["state"], "down");
    let r = outsider.push(&push_body("a", json!({}))).await;
    assert_eq!(r.assert_json(503)["error"], "cluster_unavailable");
    assert!(
        !outsider.log_text().contains("s3cret"),
        "the token is never logged"
    );
}
