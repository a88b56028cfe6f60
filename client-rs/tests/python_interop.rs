//! client-rs against real CPython 3.11 and 3.13: plain Listeners (no broker) of both handshake
//! generations, and stock Clients through the broker, each way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::*;
use mphub_client::serde_pickle;
use mphub_client::{Client, ConnectOptions, Connection};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Reading {
    name: String,
    v: f64,
    tags: Vec<String>,
    ok: bool,
    none: Option<i32>,
}

fn reading() -> Reading {
    Reading {
        name: "sensor-7".into(),
        v: 21.5,
        tags: vec!["a".into(), "b".into()],
        ok: true,
        none: None,
    }
}

fn spawn(python: &std::path::Path, args: &[&str]) -> (Child, BufReader<std::process::ChildStdout>) {
    let quiet = args.first() == Some(&"listener-refusing");
    let args = if quiet {
        &["listener", args[1]][..]
    } else {
        args
    };
    let mut child = Command::new(python)
        .arg(peer_script())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(if quiet {
            Stdio::null()
        } else {
            Stdio::inherit()
        })
        .spawn()
        .expect("start python");
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

fn line(out: &mut BufReader<std::process::ChildStdout>) -> String {
    let mut l = String::new();
    out.read_line(&mut l).unwrap();
    l.trim().to_owned()
}

fn finish(mut child: Child, mut out: BufReader<std::process::ChildStdout>, want: &str) {
    let status = child.wait().unwrap();
    let last = line(&mut out);
    assert!(status.success(), "python failed: {last}");
    assert!(last.starts_with(want), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_exchanges_every_kind_of_object_with_listeners_of_both_generations() {
    for (version, python) in pythons() {
        let (child, mut out) = spawn(&python, &["listener", &hex(KEY)]);
        let port = line(&mut out).trim_start_matches("port ").to_owned();
        let mut conn = Connection::connect(&format!("127.0.0.1:{port}"), Some(KEY))
            .await
            .unwrap_or_else(|e| panic!("{version}: {e}"));
        for v in expected() {
            let body = serde_pickle::value_to_vec(&v, Default::default()).unwrap();
            conn.send_bytes(&body).await.unwrap();
        }
        for (i, want) in expected().into_iter().enumerate() {
            assert_eq!(
                conn.recv_value().await.unwrap(),
                want,
                "{version} object {i}"
            );
        }
        conn.send(&("ignored", reading())).await.unwrap();
        let (tag, (_, back)): (String, (String, Reading)) = conn.recv().await.unwrap();
        assert_eq!((tag.as_str(), back), ("echo", reading()), "{version}");
        conn.send(&"close").await.unwrap();
        finish(child, out, &format!("ok listener {version}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_by_a_python_listener() {
    for (_, python) in pythons() {
        let (mut child, mut out) = spawn(&python, &["listener-refusing", &hex(KEY)]);
        let port = line(&mut out).trim_start_matches("port ").to_owned();
        let err = Connection::connect(&format!("127.0.0.1:{port}"), Some(b"wrong"))
            .await
            .unwrap_err();
        assert!(matches!(err, mphub_client::Error::Auth { .. }), "{err}");
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_python_publishers_reach_a_rust_subscriber() {
    let b = broker().await;
    let client = Client::connect(&addr(&b), ConnectOptions::new().authkey(KEY))
        .await
        .unwrap();
    for (version, python) in pythons() {
        let topic = format!("interop.from{}", version.replace('.', ""));
        let mut sub = client.subscribe(&topic).await.unwrap();
        let (child, out) = spawn(&python, &["publish", &addr(&b), &hex(KEY), &topic]);
        for (i, want) in expected().into_iter().enumerate() {
            let msg = recv(&mut sub).await;
            assert_eq!(msg.topic(), topic);
            assert_eq!(msg.value().unwrap(), want, "{version} object {i}");
            if i == 0 {
                assert_eq!(msg.decode::<Reading>().unwrap(), reading());
            }
        }
        finish(child, out, &format!("ok publish {version}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_publishes_reach_stock_python_subscribers_equal() {
    let b = broker().await;
    let client = Client::connect(&addr(&b), ConnectOptions::new().authkey(KEY))
        .await
        .unwrap();
    for (version, python) in pythons() {
        let topic = format!("interop.to{}", version.replace('.', ""));
        let (child, mut out) = spawn(&python, &["subscribe", &addr(&b), &hex(KEY), &topic]);
        assert_eq!(line(&mut out), "ready");
        let t = topic.as_str();
        // Typed values through serde; bytes and big ints as pickles made from Values.
        client.publish(t, &reading()).await.unwrap();
        client.publish(t, &vec![1, 2, 3]).await.unwrap();
        client.publish(t, &(1, "two", 3.0)).await.unwrap();
        client.publish(t, "ü text ✓").await.unwrap();
        for v in &expected()[4..5] {
            let pickle = serde_pickle::value_to_vec(v, Default::default()).unwrap();
            client.publish_pickled(t, pickle).await.unwrap();
        }
        client.publish(t, &-0.125).await.unwrap();
        client.publish(t, &None::<i32>).await.unwrap();
        client.publish(t, &true).await.unwrap();
        client.publish(t, &false).await.unwrap();
        for v in &expected()[9..11] {
            let pickle = serde_pickle::value_to_vec(v, Default::default()).unwrap();
            client.publish_pickled(t, pickle).await.unwrap();
        }
        client.publish(t, &-5).await.unwrap();
        client.flush().await.unwrap();
        finish(child, out, &format!("ok subscribe {version}"));
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
