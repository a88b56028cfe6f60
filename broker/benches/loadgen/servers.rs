//! The servers under test, each started fresh for every measurement and killed after it: the
//! `mphub` release binary and Debian's `nats-server`, both on loopback, port chosen by the
//! kernel, each allowed 1 GiB queued per subscriber so no run measures drops.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::wire::Proto;

/// Bytes one subscriber may have queued in the server before it counts as slow.
const ALLOWANCE: u64 = 1 << 30;

/// How to start one server.
#[derive(Debug, Clone)]
pub enum Launch {
    /// `bin` with `--metrics` on or off, and a config file of these contents if any.
    Mphub {
        bin: String,
        metrics: bool,
        config: Option<String>,
    },
    /// `nats-server` with a generated config file.
    Nats,
    /// This load generator again as a plain byte relay (`relay.rs`): the latency floor.
    Relay,
}

/// A server as the tables name it.
#[derive(Debug, Clone)]
pub struct Target {
    pub label: String,
    pub launch: Launch,
    /// Keys the clients use (mphub users): publishers take the first, subscribers the second.
    pub keys: Option<(Vec<u8>, Vec<u8>)>,
}

impl Target {
    pub fn mphub(label: &str, bin: &str, metrics: bool) -> Target {
        Target {
            label: label.into(),
            launch: Launch::Mphub {
                bin: bin.into(),
                metrics,
                config: None,
            },
            keys: None,
        }
    }

    pub fn nats() -> Target {
        Target {
            label: "nats-server".into(),
            launch: Launch::Nats,
            keys: None,
        }
    }

    /// The latency floor: no broker, only a process copying bytes (`relay.rs`).
    pub fn relay() -> Target {
        Target {
            label: "plain relay".into(),
            launch: Launch::Relay,
            keys: None,
        }
    }

    pub fn proto(&self) -> Proto {
        match self.launch {
            Launch::Mphub { .. } | Launch::Relay => Proto::Mphub,
            Launch::Nats => Proto::Nats,
        }
    }
}

/// The release binary this checkout builds, or `$MPHUB_BIN`.
pub fn default_mphub() -> String {
    std::env::var("MPHUB_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/mphub").to_string()
    })
}

/// A directory of its own under the system's temporary directory, removed when dropped.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new() -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mphub-loadgen-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a server listens and which wire it speaks.
#[derive(Debug, Clone)]
pub struct Addr {
    pub addr: String,
    pub proto: Proto,
    pub pid: u32,
}

impl Addr {
    /// User plus system CPU seconds the server has used (clock ticks of 10 ms).
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        ticks / 100.0
    }
}

/// One running server.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub addr: String,
    pub proto: Proto,
    _scratch: Scratch,
}

impl Server {
    pub fn start(t: &Target) -> Server {
        let scratch = Scratch::new();
        let (mut child, marker) = match &t.launch {
            Launch::Mphub {
                bin,
                metrics,
                config,
            } => {
                let mut cmd = Command::new(bin);
                cmd.args(["--listen", "127.0.0.1:0"])
                    .args(["--outbound-limit", &ALLOWANCE.to_string()])
                    .args(["--metrics", if *metrics { "127.0.0.1:0" } else { "off" }])
                    .args([
                        "--max-connections",
                        "20000",
                        "--max-subscriptions",
                        "100000",
                    ])
                    .args(["--log-level", "warn,mphub_broker=info"])
                    .env_remove("MPHUB_AUTHKEY");
                if let Some(text) = config {
                    let path = scratch.0.join("mphub.toml");
                    std::fs::write(&path, text).unwrap();
                    cmd.arg("--config").arg(path);
                }
                let child = cmd.stderr(Stdio::piped()).spawn().unwrap_or_else(|e| {
                    panic!("cannot run {bin}: {e} (cargo build --release -p mphub-broker)")
                });
                (child, "mphub listening on ")
            }
            Launch::Nats => {
                // max_pending: the bytes a client may have pending before it is a slow
                // consumer (default 64 MiB); write_deadline: how long a flush may block.
                let conf = format!(
                    "host: 127.0.0.1\nport: -1\nmax_pending: {ALLOWANCE}\n\
                     write_deadline: \"60s\"\nmax_connections: 20000\n"
                );
                let path = scratch.0.join("nats.conf");
                std::fs::write(&path, conf).unwrap();
                let child = Command::new("nats-server")
                    .arg("-c")
                    .arg(&path)
                    .stderr(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot run nats-server: {e}"));
                (child, "Listening for client connections on ")
            }
            Launch::Relay => {
                let child = Command::new(std::env::current_exe().unwrap())
                    .arg("--relay")
                    .stderr(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot run the relay: {e}"));
                (child, crate::relay::LISTENING)
            }
        };
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("server exited").unwrap();
            if let Some(rest) = line.split(marker).nth(1) {
                break rest.trim().to_string();
            }
        };
        // Keep draining the log so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr,
            proto: t.proto(),
            _scratch: scratch,
        }
    }

    pub fn at(&self) -> Addr {
        Addr {
            addr: self.addr.clone(),
            proto: self.proto,
            pid: self.pid(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// While alive, `perf record -g` samples the server into `path` (for `--perf DIR`).
#[derive(Debug)]
pub struct Profile(Child);

impl Profile {
    pub fn start(pid: u32, path: PathBuf) -> Profile {
        let child = Command::new("perf")
            .args([
                "record",
                "-F",
                "2000",
                "-g",
                "-q",
                "-p",
                &pid.to_string(),
                "-o",
            ])
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("perf");
        // perf needs a moment to attach before the work starts.
        std::thread::sleep(std::time::Duration::from_millis(300));
        Profile(child)
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        // SIGINT makes perf write its file out.
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}
