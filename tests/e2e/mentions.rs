//! `@mentions` of public accounts (docs/protocol.md §9).

use serde_json::{json, Value};

use crate::common::*;

fn bots() -> Daemon {
    Daemon::start(&["--public-accounts", "ci_bot,deploy_bot"])
}

fn msg(user: &str, text: &str) -> Value {
    json!({"user_id": user, "data": {"message": text}})
}

#[tokio::test]
async fn mention_reroutes_a_push_to_the_bot() {
    let d = bots();
    let mut bot = d.device("ci_bot").await;
    let mut user = d.device("u1").await;
    let r = d
        .push(
            &json!({"user_id":"u1","data":{"message":"Please run tests on my branch @ci_bot",
            "correlation_id":"corr-123"},"timestamp":42}),
        )
        .await;
    assert_eq!(
        r.assert_json(200),
        json!({"status":"success","message":"Message delivered","routed_to":"ci_bot"})
    );
    let got = bot.recv_json().await;
    assert_eq!(got["message"], "Please run tests on my branch @ci_bot");
    assert_eq!(got["correlation_id"], "corr-123");
    assert_eq!(got["user_id"], "u1", "user_id added is the message's");
    assert_eq!(
        got["original_sender"],
        json!({"user_id":"u1","timestamp":42})
    );
    // The original recipient got nothing: its next frame is a later marker.
    d.push(&msg("u1", "marker")).await.assert_json(200);
    assert_eq!(user.recv_json().await["message"], "marker");
}

#[tokio::test]
async fn mention_of_a_bot_not_connected_is_partial_with_routed_to() {
    let d = bots();
    let _user = d.device("u1").await;
    let r = d.push(&msg("u1", "@deploy_bot go")).await;
    assert_eq!(
        r.assert_json(200),
        json!({"status":"partial","message":"User not connected","routed_to":"deploy_bot"})
    );
}

#[tokio::test]
async fn mention_rules_on_where_a_name_counts() {
    let d = bots();
    let _ci = d.device("ci_bot").await;
    let _deploy = d.device("deploy_bot").await;
    let cases: [(Value, Option<&str>); 12] = [
        (json!({"message":"@ci_bot at the start"}), Some("ci_bot")),
        (json!({"message":"(@ci_bot)"}), Some("ci_bot")),
        (json!({"message":"hey,@ci_bot!"}), Some("ci_bot")),
        (
            json!({"message":"@nobody then @deploy_bot and @ci_bot"}),
            Some("deploy_bot"),
        ),
        // An email address is not a mention.
        (json!({"message":"mail a@ci_bot please"}), None),
        (json!({"message":"x_@ci_bot"}), None),
        // The name is the longest run, and case matters.
        (json!({"message":"@ci_bots"}), None),
        (json!({"message":"@CI_BOT"}), None),
        // The first string among message, text, content, body is searched.
        (json!({"message":5, "text":"@ci_bot"}), Some("ci_bot")),
        (json!({"message":"hello", "text":"@ci_bot"}), None),
        (
            json!({"content":"@deploy_bot", "body":"@ci_bot"}),
            Some("deploy_bot"),
        ),
        (json!({"body":"@ci_bot"}), Some("ci_bot")),
    ];
    for (data, want) in cases {
        let r = d.push(&json!({"user_id":"u9","data":data})).await;
        let v = r.assert_json(200);
        match want {
            Some(bot) => assert_eq!(v["routed_to"], bot, "{data}: {v}"),
            None => {
                assert!(v.get("routed_to").is_none(), "{data} rerouted: {v}");
                assert_eq!(v["status"], "partial", "{data}: {v}");
            }
        }
    }
}

#[tokio::test]
async fn mention_of_itself_routes_like_any_other() {
    let d = bots();
    let mut bot = d.device("ci_bot").await;
    let r = d.push(&msg("ci_bot", "note to self @ci_bot")).await;
    assert_eq!(r.assert_json(200)["routed_to"], "ci_bot");
    assert_eq!(
        bot.recv_json().await["original_sender"]["user_id"],
        "ci_bot"
    );
}

#[tokio::test]
async fn mention_in_send_relays_the_bots_answers() {
    let d = bots();
    let mut bot = d.device("ci_bot").await;
    let mut user = d.device("u1").await;
    let mut s = d
        .send(
            &json!({"user_id":"u1","data":{"message":"build it @ci_bot","correlation_id":"m1"},
            "event_type":"message"}),
        )
        .await;
    s.assert_stream_head();
    let got = bot.recv_json().await;
    assert_eq!(got["correlation_id"], "m1");
    assert_eq!(got["original_sender"]["user_id"], "u1");
    // The original recipient is not the target: it cannot answer.
    user.send_text(r#"{"correlation_id":"m1","is_final":true,"from":"u1"}"#)
        .await;
    let a = r#"{"type":"response","correlation_id":"m1","is_final":true,"from":"ci_bot"}"#;
    bot.send_text(a).await;
    let ev = s.next_event(step()).await;
    assert_eq!(ev.data, a);
    assert_eq!(ev.event.as_deref(), Some("message"));
    s.expect_end(step()).await;
}

#[tokio::test]
async fn mention_in_send_to_a_bot_not_connected() {
    let d = bots();
    let _user = d.device("u1").await;
    let mut s = d.send(&msg_with_id("u1", "ask @deploy_bot", "m2")).await;
    s.assert_stream_head();
    s.expect_error_end("User not connected", "m2", step()).await;
}

fn msg_with_id(user: &str, text: &str, cid: &str) -> Value {
    json!({"user_id": user, "data": {"message": text, "correlation_id": cid}})
}

#[tokio::test]
async fn mention_without_public_accounts_is_plain_text() {
    let d = Daemon::start(&[]);
    let mut user = d.device("u1").await;
    let v = d.push(&msg("u1", "@ci_bot")).await.assert_json(200);
    assert_eq!(v, json!({"status":"success","message":"Message delivered"}));
    assert_eq!(user.recv_json().await["message"], "@ci_bot");
}
