//! The Delta Chat test peer (tests/peers/dcpeer.py) driven over JSON lines, and helpers for its
//! answers. Shared by the Delta Chat tests.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use crate::support::{Hub, tail};
use serde_json::{Value, json};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Upper bound for every wait; a hop normally takes about a second.
pub const WAIT: Duration = Duration::from_secs(60);

/// A Delta Chat test peer (`dcpeer.py`), driven synchronously over JSON lines.
pub struct DcPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
    next_id: u64,
    _dir: tempfile::TempDir,
}

impl DcPeer {
    /// Starts `$COI_PYTHON $COI_DCPEER <tempdir>` and waits for its ready line.
    pub fn start() -> DcPeer {
        let python = std::env::var("COI_PYTHON").expect("COI_PYTHON (eval deploy/stack.sh env)");
        let script = std::env::var("COI_DCPEER").expect("COI_DCPEER (eval deploy/stack.sh env)");
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("dcpeer.log");
        let err = std::fs::File::create(&log).expect("dcpeer log");
        let mut child = Command::new(python)
            .arg(script)
            .arg(dir.path().join("accounts"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start dcpeer");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut peer = DcPeer {
            stdin: child.stdin.take(),
            child,
            lines,
            log,
            next_id: 0,
            _dir: dir,
        };
        let ready = peer
            .read(WAIT)
            .unwrap_or_else(|e| panic!("dcpeer start: {e}"));
        assert_eq!(ready["ready"], true, "dcpeer ready line: {ready}");
        eprintln!("dcpeer ready, core {}", ready["core_version"]);
        peer
    }

    fn read(&mut self, timeout: Duration) -> Result<Value, String> {
        let line = self
            .lines
            .recv_timeout(timeout)
            .map_err(|e| format!("no reply from dcpeer within {timeout:?}: {e}"))?;
        serde_json::from_str(&line).map_err(|e| format!("bad reply line {line:?}: {e}"))
    }

    /// Sends one command and returns its reply, or dcpeer's error.
    pub fn try_call(&mut self, mut req: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        req["id"] = json!(id);
        // dcpeer applies its own timeouts to waiting commands; allow some slack on top.
        let timeout = Duration::from_secs_f64(req["timeout"].as_f64().unwrap_or(30.0) + 30.0);
        let stdin = self.stdin.as_mut().ok_or("dcpeer stdin closed")?;
        writeln!(stdin, "{req}").map_err(|e| format!("write to dcpeer: {e}"))?;
        stdin
            .flush()
            .map_err(|e| format!("flush dcpeer stdin: {e}"))?;
        let reply = self.read(timeout)?;
        if reply["id"] != json!(id) {
            return Err(format!("reply out of order: {reply}"));
        }
        if reply["ok"] != true {
            return Err(format!("{} failed: {reply}", req["cmd"]));
        }
        Ok(reply)
    }

    /// Like [`DcPeer::try_call`]; panics (the peer's log is printed on drop) on any error.
    pub fn call(&mut self, req: Value) -> Value {
        self.try_call(req).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn log_tail(&self, n: usize) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), n)
    }
}

impl Drop for DcPeer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- dcpeer log tail:\n{}", self.log_tail(80));
        }
        // EOF on stdin is a shutdown request; give it a moment, then make sure it is gone.
        drop(self.stdin.take());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prints the bridge log if the test fails outside `Hub::wait_records` (which prints it itself).
pub struct BridgeLogOnPanic<'a>(pub &'a Hub);

impl Drop for BridgeLogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- bridge log tail:\n{}", tail(&self.0.log(), 80));
        }
    }
}

pub fn find(records: &[Value], pred: impl Fn(&Value) -> bool) -> Option<&Value> {
    records.iter().find(|r| pred(r))
}

pub fn text_of(m: &Value) -> &str {
    m["text"].as_str().unwrap_or_default()
}

/// Waits until `pred` holds for `account`'s message `msg_id` (e.g. a reaction arrived).
pub fn wait_message(
    peer: &mut DcPeer,
    account: &Value,
    msg_id: &Value,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let m = peer.call(json!({"cmd": "get_message", "account_id": account, "msg_id": msg_id}))
            ["message"]
            .clone();
        if pred(&m) {
            return m;
        }
        assert!(
            start.elapsed() < WAIT,
            "timed out waiting for {what}: {m:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The chats of `account` (device and self chats left out).
pub fn chat_list(peer: &mut DcPeer, account: &Value) -> Vec<Value> {
    peer.call(json!({"cmd": "chat_list", "account_id": account}))["chats"]
        .as_array()
        .expect("chats")
        .clone()
}
