//! What the end-to-end benches share: a raw SMTP client, a raw IMAP IDLE client, Message-ID
//! helpers and nearest-rank statistics.

#![allow(dead_code, unreachable_pub)] // each bench uses a part

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

/// The Message-ID of a raw mail, without angle brackets.
pub fn message_id(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if line.len() > 11 && line[..11].eq_ignore_ascii_case("message-id:") {
            return angle(&line[11..]);
        }
    }
    None
}

/// The text between the first `<` and the next `>`.
pub fn angle(s: &str) -> Option<String> {
    let a = s.find('<')?;
    let b = s[a..].find('>')?;
    Some(s[a + 1..a + b].to_owned())
}

/// A minimal SMTP client on one persistent connection, with TCP_NODELAY and the message plus its
/// final dot in one write (as most MUAs send it). See `submit_client_comparison` in e2e.rs for why.
pub struct RawSmtp {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl RawSmtp {
    pub async fn connect() -> std::io::Result<RawSmtp> {
        let s = tokio::net::TcpStream::connect("127.0.0.1:25").await?;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        let mut c = RawSmtp {
            r: BufReader::new(r),
            w,
        };
        c.reply('2').await?;
        c.command("EHLO bench.example.test", '2').await?;
        Ok(c)
    }

    /// Reads a (multi-line) reply; fails unless its code starts with `want`.
    async fn reply(&mut self, want: char) -> std::io::Result<()> {
        loop {
            let mut l = String::new();
            if self.r.read_line(&mut l).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if l.as_bytes().get(3) != Some(&b'-') {
                return if l.starts_with(want) {
                    Ok(())
                } else {
                    Err(std::io::Error::other(l))
                };
            }
        }
    }

    pub async fn command(&mut self, cmd: &str, want: char) -> std::io::Result<()> {
        self.w.write_all(format!("{cmd}\r\n").as_bytes()).await?;
        self.reply(want).await
    }

    /// One transaction; `raw` has CRLF line ends and no line starting with a dot.
    pub async fn send(&mut self, from: &str, rcpt: &str, raw: &str) -> std::io::Result<()> {
        self.command(&format!("MAIL FROM:<{from}>"), '2').await?;
        self.command(&format!("RCPT TO:<{rcpt}>"), '2').await?;
        self.command("DATA", '3').await?;
        self.w.write_all(format!("{raw}.\r\n").as_bytes()).await?;
        self.reply('2').await
    }
}

/// A minimal IMAP client over plain TCP (loopback allows plaintext LOGIN), for the baseline.
pub struct RawImap {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
    n: u32,
}

impl RawImap {
    /// Logs in as `user` on 127.0.0.1:143.
    pub async fn connect(user: &str, password: &str) -> std::io::Result<RawImap> {
        let s = tokio::net::TcpStream::connect("127.0.0.1:143").await?;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        let mut c = RawImap {
            r: BufReader::new(r),
            w,
            n: 0,
        };
        c.line().await?;
        c.command(&format!("LOGIN {user} {password}")).await?;
        Ok(c)
    }

    /// One response line with any literals inlined.
    async fn line(&mut self) -> std::io::Result<String> {
        let mut out = String::new();
        loop {
            let mut buf = Vec::new();
            if self.r.read_until(b'\n', &mut buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let l = String::from_utf8_lossy(&buf);
            let l = l.trim_end_matches(['\r', '\n']);
            out.push_str(l);
            let literal = l
                .strip_suffix('}')
                .and_then(|x| x.rsplit_once('{'))
                .and_then(|(_, n)| n.parse::<usize>().ok());
            match literal {
                Some(n) => {
                    let mut lit = vec![0; n];
                    self.r.read_exact(&mut lit).await?;
                    out.push_str(&String::from_utf8_lossy(&lit));
                }
                None => return Ok(out),
            }
        }
    }

    pub async fn send(&mut self, cmd: &str) -> std::io::Result<String> {
        self.n += 1;
        let tag = format!("b{}", self.n);
        self.w
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .await?;
        Ok(tag)
    }

    async fn until_tagged(&mut self, tag: &str) -> std::io::Result<Vec<String>> {
        let mut lines = Vec::new();
        loop {
            let l = self.line().await?;
            if let Some(rest) = l.strip_prefix(&format!("{tag} ")) {
                if !rest.starts_with("OK") {
                    return Err(std::io::Error::other(l));
                }
                return Ok(lines);
            }
            lines.push(l);
        }
    }

    pub async fn command(&mut self, cmd: &str) -> std::io::Result<Vec<String>> {
        let tag = self.send(cmd).await?;
        self.until_tagged(&tag).await
    }
}

pub fn untagged_num(line: &str, what: &str) -> Option<u32> {
    let rest = line.strip_prefix("* ")?;
    let (n, w) = rest.split_once(' ')?;
    (w.trim() == what).then(|| n.parse().ok()).flatten()
}

pub fn bracket_num(lines: &[String], key: &str) -> Option<i64> {
    lines.iter().find_map(|l| {
        let i = l.find(&format!("[{key} "))?;
        let rest = &l[i + key.len() + 2..];
        rest[..rest.find(']')?].parse().ok()
    })
}

/// IDLEs on the selected mailbox and records when Dovecot announces each new mail (by Message-ID),
/// as `now()` at the `* n EXISTS` line.
pub async fn watch_exists<T: Copy>(
    mut imap: RawImap,
    mut seen: u32,
    out: Arc<Mutex<HashMap<String, T>>>,
    now: fn() -> T,
) -> std::io::Result<()> {
    loop {
        let tag = imap.send("IDLE").await?;
        let (n, t) = loop {
            let l = imap.line().await?;
            if let Some(n) = untagged_num(&l, "EXISTS") {
                if n > seen {
                    break (n, now());
                }
                seen = n;
            } else if let Some(n) = untagged_num(&l, "EXPUNGE")
                && n <= seen
            {
                seen -= 1;
            }
        };
        imap.w.write_all(b"DONE\r\n").await?;
        imap.until_tagged(&tag).await?;
        let lines = imap
            .command(&format!(
                "FETCH {}:{n} (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
                seen + 1
            ))
            .await?;
        for l in lines {
            if let Some(id) = message_id_in_fetch(&l) {
                out.lock().unwrap().entry(id).or_insert(t);
            }
        }
        seen = n;
    }
}

pub fn message_id_in_fetch(l: &str) -> Option<String> {
    let lower = l.to_ascii_lowercase();
    let i = lower.find("message-id:")?;
    angle(&l[i..])
}

/// Nearest-rank statistics of a sample, in the sample's unit.
pub struct Stats {
    pub n: usize,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

/// `None` for an empty sample.
pub fn stats(mut ms: Vec<f64>) -> Option<Stats> {
    if ms.is_empty() {
        return None;
    }
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    // Nearest-rank percentiles.
    let pct = |p: f64| ms[((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1];
    Some(Stats {
        n,
        median: pct(50.0),
        p90: pct(90.0),
        p99: pct(99.0),
        min: ms[0],
        max: ms[n - 1],
    })
}

/// Prints one line of figures (milliseconds).
pub fn row(label: &str, ms: Vec<f64>) {
    match stats(ms) {
        Some(s) => println!(
            "  {label:<42} n={:<4} median {:>7.1} ms  p90 {:>7.1} ms  p99 {:>7.1} ms  (min {:.1}, max {:.1})",
            s.n, s.median, s.p90, s.p99, s.min, s.max
        ),
        None => println!("  {label:<42} no samples"),
    }
}
