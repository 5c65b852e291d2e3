//! LMTP listener, in process: a raw TCP client against `transport::lmtp::serve` on 127.0.0.1:0
//! with a fake sink.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coi_side::transport::{InboundMail, InboundSink, InboundSource, IngestError, LmtpConfig, lmtp};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Clone, Copy)]
enum Verdict {
    Ok,
    Transient,
    Permanent,
}

struct FakeSink {
    verdict: Verdict,
    mails: Mutex<Vec<InboundMail>>,
    /// When set, `accept` waits for a notification before answering.
    gate: Option<Arc<Notify>>,
    entered: Notify,
}

impl FakeSink {
    fn new(verdict: Verdict) -> Arc<Self> {
        Arc::new(Self {
            verdict,
            mails: Mutex::new(Vec::new()),
            gate: None,
            entered: Notify::new(),
        })
    }

    fn mails(&self) -> Vec<InboundMail> {
        self.mails.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl InboundSink for FakeSink {
    async fn accept(&self, mail: InboundMail) -> Result<(), IngestError> {
        if let Ok(mut m) = self.mails.lock() {
            m.push(mail);
        }
        self.entered.notify_one();
        if let Some(gate) = &self.gate {
            gate.notified().await;
        }
        match self.verdict {
            Verdict::Ok => Ok(()),
            Verdict::Transient => Err(IngestError::Transient("database is locked".into())),
            Verdict::Permanent => Err(IngestError::Permanent("not a chat message".into())),
        }
    }
}

struct Running {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) -> Duration {
        let t = Instant::now();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        t.elapsed()
    }
}

fn config() -> LmtpConfig {
    let mut cfg = LmtpConfig::new("lmtp.test", vec!["bridge.example.test".into()]);
    cfg.max_message_bytes = 4096;
    cfg
}

async fn start(cfg: LmtpConfig, sink: Arc<dyn InboundSink>) -> Result<Running, std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(lmtp::serve(listener, cfg, sink, async move {
        let _ = rx.await;
    }));
    Ok(Running {
        addr,
        stop: Some(tx),
        task,
    })
}

struct Client {
    rd: BufReader<tokio::net::tcp::OwnedReadHalf>,
    wr: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    async fn connect(
        addr: std::net::SocketAddr,
    ) -> Result<(Self, String), Box<dyn std::error::Error>> {
        let (rd, wr) = TcpStream::connect(addr).await?.into_split();
        let mut c = Self {
            rd: BufReader::new(rd),
            wr,
        };
        let greeting = c.line().await?;
        Ok((c, greeting))
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.wr.write_all(bytes).await
    }

    /// One reply line without CRLF (errors on EOF or after 5 s).
    async fn line(&mut self) -> Result<String, Box<dyn std::error::Error>> {
        let mut s = String::new();
        let n = tokio::time::timeout(Duration::from_secs(5), self.rd.read_line(&mut s)).await??;
        if n == 0 {
            return Err("connection closed".into());
        }
        Ok(s.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// One complete (possibly multi-line) reply, lines joined with `|`.
    async fn reply(&mut self) -> Result<String, Box<dyn std::error::Error>> {
        let mut lines = Vec::new();
        loop {
            let l = self.line().await?;
            let last = l.as_bytes().get(3) != Some(&b'-');
            lines.push(l);
            if last {
                return Ok(lines.join("|"));
            }
        }
    }

    async fn cmd(&mut self, c: &str) -> Result<String, Box<dyn std::error::Error>> {
        self.send(format!("{c}\r\n").as_bytes()).await?;
        self.reply().await
    }

    async fn read_to_end(&mut self) -> Result<String, Box<dyn std::error::Error>> {
        let mut s = String::new();
        tokio::time::timeout(Duration::from_secs(5), self.rd.read_to_string(&mut s)).await??;
        Ok(s)
    }
}

#[tokio::test]
async fn accepted_mail_is_unstuffed_and_acknowledged_per_recipient() -> TestResult {
    let sink = FakeSink::new(Verdict::Ok);
    let srv = start(config(), sink.clone()).await?;
    let (mut c, greeting) = Client::connect(srv.addr).await?;
    assert_eq!(greeting, "220 lmtp.test LMTP ready");
    let lhlo = c.cmd("LHLO mta.example.test").await?;
    for ext in ["PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SIZE 4096"] {
        assert!(lhlo.contains(ext), "{lhlo}");
    }
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.test>").await?,
        "250 2.1.0 OK"
    );
    assert_eq!(
        c.cmd("RCPT TO:<x@bridge.example.test>").await?,
        "250 2.1.5 OK"
    );
    assert_eq!(
        c.cmd("RCPT TO:<bob@example.test>").await?,
        "550 5.1.1 <bob@example.test> no such user here"
    );
    assert_eq!(
        c.cmd("RCPT TO:<y@BRIDGE.example.test>").await?,
        "250 2.1.5 OK"
    );
    assert!(c.cmd("DATA").await?.starts_with("354 "));
    c.send(b"Subject: dots\r\n\r\n..leading dot\r\n...two\r\n.\r\n")
        .await?;
    assert_eq!(
        c.reply().await?,
        "250 2.0.0 <x@bridge.example.test> delivered"
    );
    assert_eq!(
        c.reply().await?,
        "250 2.0.0 <y@BRIDGE.example.test> delivered"
    );
    assert_eq!(
        c.cmd("QUIT").await?,
        "221 2.0.0 lmtp.test closing connection"
    );

    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "one accept call per message");
    assert_eq!(
        mails[0].raw,
        b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n"
    );
    assert_eq!(
        mails[0].source,
        InboundSource::Lmtp {
            mail_from: "alice@example.test".into(),
            rcpt_to: vec![
                "x@bridge.example.test".into(),
                "y@BRIDGE.example.test".into()
            ],
        }
    );
    srv.stop().await;
    Ok(())
}

#[tokio::test]
async fn sink_errors_become_451_or_554_for_every_recipient() -> TestResult {
    for (verdict, want) in [
        (
            Verdict::Transient,
            [
                "451 4.3.0 <a@bridge.example.test> temporary failure: database is locked",
                "451 4.3.0 <b@bridge.example.test> temporary failure: database is locked",
            ],
        ),
        (
            Verdict::Permanent,
            [
                "554 5.6.0 not a chat message",
                "554 5.6.0 not a chat message",
            ],
        ),
    ] {
        let sink = FakeSink::new(verdict);
        let srv = start(config(), sink.clone()).await?;
        let (mut c, _) = Client::connect(srv.addr).await?;
        c.cmd("LHLO mta").await?;
        c.cmd("MAIL FROM:<>").await?;
        c.cmd("RCPT TO:<a@bridge.example.test>").await?;
        c.cmd("RCPT TO:<b@bridge.example.test>").await?;
        c.cmd("DATA").await?;
        c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n").await?;
        assert_eq!(c.reply().await?, want[0]);
        assert_eq!(c.reply().await?, want[1]);
        // The session goes on.
        assert_eq!(c.cmd("NOOP").await?, "250 2.0.0 OK");
        assert_eq!(sink.mails().len(), 1);
        srv.stop().await;
    }
    Ok(())
}

#[tokio::test]
async fn reply_waits_for_the_commit() -> TestResult {
    let gate = Arc::new(Notify::new());
    let sink = Arc::new(FakeSink {
        verdict: Verdict::Ok,
        mails: Mutex::new(Vec::new()),
        gate: Some(gate.clone()),
        entered: Notify::new(),
    });
    let srv = start(config(), sink.clone()).await?;
    let (mut c, _) = Client::connect(srv.addr).await?;
    c.cmd("LHLO mta").await?;
    c.cmd("MAIL FROM:<a@example.test>").await?;
    c.cmd("RCPT TO:<p@bridge.example.test>").await?;
    c.cmd("DATA").await?;
    c.send(b"Subject: slow\r\n\r\nx\r\n.\r\n").await?;
    sink.entered.notified().await;
    // The sink has the mail but has not committed: no reply may be on the wire yet.
    let early = tokio::time::timeout(Duration::from_millis(300), c.line()).await;
    assert!(early.is_err(), "got a reply before the commit: {early:?}");
    gate.notify_one();
    assert_eq!(
        c.reply().await?,
        "250 2.0.0 <p@bridge.example.test> delivered"
    );
    srv.stop().await;
    Ok(())
}

#[tokio::test]
async fn oversized_message_is_drained_and_refused() -> TestResult {
    let sink = FakeSink::new(Verdict::Ok);
    let srv = start(config(), sink.clone()).await?;
    let (mut c, _) = Client::connect(srv.addr).await?;
    c.cmd("LHLO mta").await?;
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.test> SIZE=999999").await?,
        "552 5.3.4 message size exceeds fixed limit"
    );
    c.cmd("MAIL FROM:<a@example.test>").await?;
    c.cmd("RCPT TO:<p@bridge.example.test>").await?;
    c.cmd("RCPT TO:<q@bridge.example.test>").await?;
    c.cmd("DATA").await?;
    let line = format!("{}\r\n", "x".repeat(76));
    c.send(line.repeat(200).as_bytes()).await?; // ~15 KiB > 4096
    c.send(b".\r\n").await?;
    let limit = "552 5.3.4 message exceeds the size limit of 4096 bytes";
    assert_eq!(c.reply().await?, limit);
    assert_eq!(c.reply().await?, limit);
    assert_eq!(c.cmd("NOOP").await?, "250 2.0.0 OK");
    assert!(sink.mails().is_empty());
    srv.stop().await;
    Ok(())
}

#[tokio::test]
async fn pipelined_session_in_one_write() -> TestResult {
    let sink = FakeSink::new(Verdict::Ok);
    let srv = start(config(), sink.clone()).await?;
    let (mut c, _) = Client::connect(srv.addr).await?;
    c.send(
        b"LHLO mta\r\n\
          MAIL FROM:<a@example.test>\r\n\
          RCPT TO:<p@bridge.example.test>\r\n\
          RCPT TO:<nobody@elsewhere.test>\r\n\
          DATA\r\n\
          Subject: one\r\n\r\nfirst\r\n.\r\n\
          MAIL FROM:<b@example.test>\r\n\
          DATA\r\n\
          RCPT TO:<q@bridge.example.test>\r\n\
          DATA\r\n\
          Subject: two\r\n\r\nsecond\r\n.\r\n\
          QUIT\r\n",
    )
    .await?;
    let all = c.read_to_end().await?;
    let codes: Vec<&str> = all
        .split("\r\n")
        .filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ')
        .map(|l| &l[..3])
        .collect();
    assert_eq!(
        codes,
        vec![
            "250", "250", "250", "550", "354", "250", "250", "503", "250", "354", "250", "221"
        ],
        "{all}"
    );
    let mails = sink.mails();
    assert_eq!(mails.len(), 2);
    assert_eq!(mails[0].raw, b"Subject: one\r\n\r\nfirst\r\n");
    assert_eq!(mails[1].raw, b"Subject: two\r\n\r\nsecond\r\n");
    srv.stop().await;
    Ok(())
}

#[tokio::test]
async fn hostile_input_does_not_break_the_server() -> TestResult {
    let sink = FakeSink::new(Verdict::Ok);
    let srv = start(config(), sink.clone()).await?;
    let (mut c, _) = Client::connect(srv.addr).await?;
    assert_eq!(c.cmd("DATA").await?, "503 5.5.1 need MAIL before DATA");
    assert_eq!(
        c.cmd("RCPT TO:<p@bridge.example.test>").await?,
        "503 5.5.1 need MAIL before RCPT"
    );
    assert_eq!(c.cmd("EHLO mta").await?, "500 5.5.1 this is LMTP, say LHLO");
    c.send(&[0xff, 0x00, 0x1b, b'\r', b'\n']).await?;
    assert_eq!(c.reply().await?, "500 5.5.2 command is not UTF-8");
    let long = "A".repeat(10_000);
    assert_eq!(c.cmd(&long).await?, "500 5.5.2 line too long");
    c.send(b"LHLO mta\n").await?; // bare LF in a command: tolerated
    assert!(c.reply().await?.starts_with("250-lmtp.test"));
    c.cmd("MAIL FROM:<a@example.test>").await?;
    assert_eq!(c.cmd("DATA").await?, "503 5.5.1 no valid recipients");
    c.cmd("RCPT TO:<p@bridge.example.test>").await?;
    c.cmd("DATA").await?;
    // Bare-LF dot lines do not end the data (no smuggling); only CRLF.CRLF does.
    c.send(b"Subject: s\r\n\r\nx\n.\nMAIL FROM:<evil@example.test>\r\n.\r\n")
        .await?;
    assert_eq!(
        c.reply().await?,
        "250 2.0.0 <p@bridge.example.test> delivered"
    );
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(
        mails[0].raw,
        b"Subject: s\r\n\r\nx\r\n\r\nMAIL FROM:<evil@example.test>\r\n"
    );
    srv.stop().await;
    Ok(())
}

#[tokio::test]
async fn idle_client_times_out_with_421() -> TestResult {
    let mut cfg = config();
    cfg.command_timeout = Duration::from_millis(300);
    let srv = start(cfg, FakeSink::new(Verdict::Ok)).await?;
    let (mut c, _) = Client::connect(srv.addr).await?;
    let t = Instant::now();
    let rest = c.read_to_end().await?;
    assert!(rest.starts_with("421 4.4.2 "), "{rest}");
    assert!(t.elapsed() >= Duration::from_millis(250));
    srv.stop().await;
    Ok(())
}

#[tokio::test]
async fn connections_are_bounded() -> TestResult {
    let mut cfg = config();
    cfg.max_connections = 1;
    let srv = start(cfg, FakeSink::new(Verdict::Ok)).await?;
    let (mut first, _) = Client::connect(srv.addr).await?;
    // The second TCP connect succeeds (listen backlog) but gets no greeting yet.
    let (rd, _wr) = TcpStream::connect(srv.addr).await?.into_split();
    let mut second = BufReader::new(rd);
    let mut greeting = String::new();
    let early =
        tokio::time::timeout(Duration::from_millis(300), second.read_line(&mut greeting)).await;
    assert!(
        early.is_err(),
        "second client was greeted while the first held the only slot"
    );
    first.cmd("QUIT").await?;
    tokio::time::timeout(Duration::from_secs(2), second.read_line(&mut greeting)).await??;
    assert!(greeting.starts_with("220 "), "{greeting}");
    srv.stop().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_idle_connections_promptly() -> TestResult {
    let srv = start(config(), FakeSink::new(Verdict::Ok)).await?;
    let (mut c, _) = Client::connect(srv.addr).await?;
    c.cmd("LHLO mta").await?;
    let took = srv.stop().await;
    assert!(took < Duration::from_secs(1), "serve took {took:?} to stop");
    let rest = c.read_to_end().await?;
    assert!(rest.starts_with("421 4.3.2 "), "{rest}");
    Ok(())
}
