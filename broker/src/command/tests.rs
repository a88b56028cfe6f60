//! Each command on its own: a [`Session`] over real outboxes and a real index, no sockets. The
//! frames are pickles written by hand (protocol 2, the opcodes CPython writes for them), the
//! expected answers built by `mphub_protocol::reply`, compared byte for byte.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use mphub_protocol::envelope::{Interest, Token};
use mphub_protocol::{frame, name, reply, Frame};
use tokio_util::sync::CancellationToken;

use super::{Flow, Services, Session};
use crate::config::{Config, ListenAddr, SlowConsumer};
use crate::connections::Entry;
use crate::index::Index;
use crate::metrics::Metrics;
use crate::outbox::{Outbox, Receiver};
use crate::route::Router;
use crate::topics::Topics;
use crate::worker_metrics;

/// A pickle being written by hand: protocol 2, then the values pushed in order.
struct Pickle(Vec<u8>);

impl Pickle {
    fn new() -> Self {
        Pickle(vec![0x80, 2])
    }

    fn str(mut self, s: &str) -> Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    fn int(mut self, n: i32) -> Self {
        self.0.push(b'J');
        self.0.extend_from_slice(&n.to_le_bytes());
        self
    }

    /// `{key: value}` with str items.
    fn dict(mut self, key: &str, value: &str) -> Self {
        self.0.push(b'}');
        self = self.str(key).str(value);
        self.0.push(b's');
        self
    }

    /// The top two values as a tuple, then STOP: a whole frame.
    fn pair(mut self) -> Frame {
        self.0.extend_from_slice(&[0x86, b'.']);
        let mut buf = BytesMut::from(&frame::encode(&self.0)[..]);
        frame::decode(&mut buf, 1 << 20)
            .expect("a frame")
            .expect("whole")
    }
}

/// `(topic, value)` with a str value.
fn publish(topic: &str, value: &str) -> Frame {
    Pickle::new().str(topic).str(value).pair()
}

struct World {
    services: Services,
    config: Arc<Config>,
}

impl World {
    fn new() -> Self {
        let metrics = Arc::new(Metrics::new());
        let router = Router::new(Arc::new(Index::default()), metrics.delivery());
        let config = Config::with_listeners(vec![ListenAddr::parse("127.0.0.1:1").unwrap()], None);
        World {
            services: Services {
                router,
                metrics,
                workers: Arc::new(worker_metrics::Store::default()),
                forward: None,
                topics: Arc::new(Topics::default()),
            },
            config: Arc::new(config),
        }
    }

    /// A connection: its introspection entry and what its writer would read.
    fn connect(&self, id: u64) -> (Arc<Entry>, Receiver) {
        let (outbox, rx) = Outbox::new(id, 1 << 20, SlowConsumer::Drop, CancellationToken::new());
        let user = self
            .config
            .users
            .anonymous()
            .expect("no key: anonymous")
            .clone();
        let entry = Entry::new(Arc::new(outbox), self.config.clone(), &user, "test".into());
        (Arc::new(entry), rx)
    }

    fn session<'a>(&'a self, conn: &'a Arc<Entry>) -> Session<'a> {
        let user = self.config.users.anonymous().expect("anonymous").clone();
        Session::new(&self.services, self.config.clone(), user, conn)
    }
}

/// Every frame queued so far, as bytes.
fn drain(rx: &mut Receiver) -> Vec<Bytes> {
    rx.take().into_iter().map(|q| q.frame).collect()
}

fn sub(pattern: &str) -> Interest<'_> {
    Interest {
        pattern: Cow::Borrowed(pattern),
        group: None,
    }
}

#[test]
fn sub_is_answered_ok_and_a_publish_reaches_the_subscriber_byte_for_byte() {
    let w = World::new();
    let (a, mut ra) = w.connect(1);
    let (b, mut rb) = w.connect(2);
    let (mut sa, mut sb) = (w.session(&a), w.session(&b));
    assert_eq!(
        sa.handle(&Pickle::new().str("$sub").str("t.*").pair()),
        Flow::Continue
    );
    assert_eq!(drain(&mut ra), [reply::ok("$sub", &sub("t.*"))]);
    let msg = publish("t.x", "hello");
    sb.handle(&msg);
    sb.fold();
    assert_eq!(drain(&mut ra), [msg.wire().clone()]);
    assert!(drain(&mut rb).is_empty(), "a publish is not answered");
}

#[test]
fn unsub_is_answered_ok_and_nothing_more_arrives() {
    let w = World::new();
    let (a, mut ra) = w.connect(1);
    let (b, _rb) = w.connect(2);
    let (mut sa, mut sb) = (w.session(&a), w.session(&b));
    sa.handle(&Pickle::new().str("$sub").str("t").pair());
    sa.handle(&Pickle::new().str("$unsub").str("t").pair());
    sb.handle(&publish("t", "late"));
    assert_eq!(
        drain(&mut ra),
        [reply::ok("$sub", &sub("t")), reply::ok("$unsub", &sub("t"))]
    );
}

#[test]
fn a_bad_pattern_is_refused_and_the_connection_goes_on() {
    let w = World::new();
    let (a, mut ra) = w.connect(1);
    let mut sa = w.session(&a);
    assert_eq!(
        sa.handle(&Pickle::new().str("$sub").str("a..b").pair()),
        Flow::Continue
    );
    let replies = drain(&mut ra);
    assert_eq!(replies.len(), 1);
    assert!(
        replies[0].windows(6).any(|w| w == b"$error"),
        "{:?}",
        replies[0]
    );
}

#[test]
fn ping_is_answered_with_its_token_after_what_came_before() {
    let w = World::new();
    let (a, mut ra) = w.connect(1);
    let mut sa = w.session(&a);
    sa.handle(&Pickle::new().str("$sub").str("t").pair());
    sa.handle(&publish("t", "mine"));
    sa.handle(&Pickle::new().str("$ping").int(7).pair());
    let got = drain(&mut ra);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(
        got[1],
        publish("t", "mine").wire().clone(),
        "own publish before the pong"
    );
    assert_eq!(got[2], reply::pong(&Token::Int(7)));
}

#[test]
fn hello_names_the_connection_and_is_answered_with_the_request() {
    let w = World::new();
    let (a, mut ra) = w.connect(1);
    let mut sa = w.session(&a);
    let hello = Pickle::new().str("$hello").dict("name", "worker-3").pair();
    sa.handle(&hello);
    assert_eq!(a.name().as_deref().map(String::as_str), Some("worker-3"));
    let read = name::hello(hello.body()).expect("a hello");
    assert_eq!(drain(&mut ra), [reply::hello(hello.body(), &read, None)]);
}

#[test]
fn metrics_are_applied_to_the_worker_store_silently() {
    use mphub_protocol::metrics::{encode, MetricKind, MetricOp};
    let w = World::new();
    let (a, mut ra) = w.connect(1);
    let mut sa = w.session(&a);
    let ops = [
        MetricOp::Declare {
            name: "jobs_total".into(),
            kind: MetricKind::Counter,
            help: "jobs".into(),
            labels: vec![],
            buckets: None,
            mode: None,
        },
        MetricOp::Inc {
            name: "jobs_total".into(),
            labels: vec![],
            amount: 2.0,
        },
    ];
    let mut buf = BytesMut::from(&frame::encode(&encode(&ops))[..]);
    let f = frame::decode(&mut buf, 1 << 20).unwrap().unwrap();
    sa.handle(&f);
    assert!(drain(&mut ra).is_empty(), "applied ops are not answered");
    let mut text = String::new();
    w.services.workers.render(&mut text);
    assert!(text.contains("jobs_total 2"), "{text}");
}

#[test]
fn close_says_goodbye() {
    let w = World::new();
    let (a, _ra) = w.connect(1);
    let mut sa = w.session(&a);
    let mut body = vec![0x80, 2, b'X'];
    body.extend_from_slice(&5u32.to_le_bytes());
    body.extend_from_slice(b"close.");
    let mut buf = BytesMut::from(&frame::encode(&body)[..]);
    let f = frame::decode(&mut buf, 1 << 20).unwrap().unwrap();
    assert_eq!(sa.handle(&f), Flow::Goodbye);
}
