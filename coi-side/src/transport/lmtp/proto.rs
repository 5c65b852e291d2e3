//! Sans-I/O LMTP server (RFC 2033): bytes in, replies and deliveries out.
//!
//! The connection task feeds whatever it read into [`Server::receive`] and then drains
//! [`Server::poll`]: every complete line is processed in order, so pipelined commands simply
//! queue up. A finished DATA phase yields [`Output::Deliver`]; the machine then waits (buffering
//! further input) until [`Server::delivered`] reports the sink's verdict, which becomes one reply
//! per accepted recipient.
//!
//! Framing rules:
//! * commands end with CRLF; a bare LF is tolerated in commands;
//! * message data ends only at `CRLF . CRLF` (a `.` line after a bare LF does not end it, which
//!   rules out end-of-data smuggling); bare LFs inside data are stored as CRLF;
//! * lines longer than [`MAX_COMMAND_LINE`] / [`MAX_DATA_LINE`] are discarded up to their LF and
//!   answered with an error (in data: the whole message is refused after the final dot);
//! * the message is counted as it arrives; once past the size limit nothing more is stored, the
//!   rest is drained, and every recipient gets `552`.

use std::collections::VecDeque;
use std::fmt::Write as _;

use crate::transport::{IngestError, one_line};

/// Longest accepted command line, terminator included (RFC 5321 allows 512; extensions more).
pub(crate) const MAX_COMMAND_LINE: usize = 2048;
/// Longest accepted message line, terminator included (RFC 5322 allows 1000).
pub(crate) const MAX_DATA_LINE: usize = 64 * 1024;
/// Unrecognised or out-of-sequence commands tolerated per connection before it is closed.
const MAX_ERRORS: u32 = 20;
/// Longest envelope address accepted (RFC 5321 path limit is 256 octets).
const MAX_ADDRESS: usize = 256;

/// Static limits of one server.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub(crate) hostname: String,
    pub(crate) max_message_bytes: usize,
    pub(crate) max_recipients: usize,
    /// Lower-case domains, without trailing dot. Empty: every domain.
    pub(crate) accept_domains: Vec<String>,
}

/// One SMTP/LMTP reply (possibly multi-line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) code: u16,
    pub(crate) lines: Vec<String>,
}

impl Reply {
    fn new(code: u16, text: impl Into<String>) -> Self {
        Self {
            code,
            lines: vec![text.into()],
        }
    }

    /// Wire form, CRLF-terminated, `code-` on all lines but the last.
    pub(crate) fn to_wire(&self) -> String {
        let mut s = String::new();
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let _ = write!(s, "{}{}{}\r\n", self.code, sep, line);
        }
        if self.lines.is_empty() {
            let _ = write!(s, "{}\r\n", self.code);
        }
        s
    }
}

/// A complete message to hand to the sink.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub(crate) mail_from: String,
    pub(crate) rcpt_to: Vec<String>,
    pub(crate) raw: Vec<u8>,
}

/// What the connection task must do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Output {
    /// Send this reply.
    Reply(Reply),
    /// Hand this message to the sink, then call [`Server::delivered`].
    Deliver(Delivery),
    /// Flush and close the connection.
    Close,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Command,
    Data,
    AwaitingDelivery,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DataError {
    TooBig,
    LineTooLong,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Crlf,
    Lf,
}

/// The LMTP server state machine of one connection.
#[derive(Debug)]
pub(crate) struct Server {
    limits: Limits,
    input: Vec<u8>,
    /// Inside an overlong line: drop bytes up to the next LF.
    discarding: bool,
    phase: Phase,
    greeted: bool,
    mail_from: Option<String>,
    rcpts: Vec<String>,
    data: Vec<u8>,
    data_error: Option<DataError>,
    /// The previous data line ended with CRLF (or data just started).
    prev_crlf: bool,
    errors: u32,
    out: VecDeque<Output>,
}

impl Server {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            input: Vec::new(),
            discarding: false,
            phase: Phase::Command,
            greeted: false,
            mail_from: None,
            rcpts: Vec::new(),
            data: Vec::new(),
            data_error: None,
            prev_crlf: true,
            errors: 0,
            out: VecDeque::new(),
        }
    }

    /// The `220` greeting.
    pub(crate) fn greeting(&self) -> Reply {
        Reply::new(220, format!("{} LMTP ready", self.limits.hostname))
    }

    /// `421` sent when the client is too slow.
    pub(crate) fn timeout_reply(&self) -> Reply {
        Reply::new(
            421,
            format!("4.4.2 {} timeout, closing connection", self.limits.hostname),
        )
    }

    /// `421` sent when the server shuts down.
    pub(crate) fn shutdown_reply(&self) -> Reply {
        Reply::new(421, format!("4.3.2 {} shutting down", self.limits.hostname))
    }

    /// True while the machine waits for [`Server::delivered`].
    #[cfg(test)]
    pub(crate) fn awaiting_delivery(&self) -> bool {
        self.phase == Phase::AwaitingDelivery
    }

    /// True inside DATA (the caller may want a longer read timeout).
    pub(crate) fn in_data(&self) -> bool {
        self.phase == Phase::Data
    }

    /// Appends received bytes. [`Server::poll`] drops the bytes of an overlong line as soon as
    /// it sees them, so if the caller polls after every read the buffer stays bounded by one
    /// line plus one read.
    pub(crate) fn receive(&mut self, bytes: &[u8]) {
        if self.phase == Phase::Closed {
            return;
        }
        self.input.extend_from_slice(bytes);
    }

    /// The next thing to do, or `None` when more input (or a delivery verdict) is needed.
    pub(crate) fn poll(&mut self) -> Option<Output> {
        loop {
            if let Some(o) = self.out.pop_front() {
                return Some(o);
            }
            if matches!(self.phase, Phase::AwaitingDelivery | Phase::Closed) {
                return None;
            }
            let limit = if self.phase == Phase::Data {
                MAX_DATA_LINE
            } else {
                MAX_COMMAND_LINE
            };
            let lf = self.input.iter().position(|&b| b == b'\n');
            if self.discarding {
                match lf {
                    Some(i) => {
                        self.input.drain(..=i);
                        self.discarding = false;
                        self.overlong_line();
                        continue;
                    }
                    None => {
                        self.input.clear();
                        return None;
                    }
                }
            }
            match lf {
                Some(i) if i < limit => {
                    let line: Vec<u8> = self.input.drain(..=i).collect();
                    let (content, ending) = match line.strip_suffix(b"\r\n") {
                        Some(c) => (c, Ending::Crlf),
                        None => (&line[..line.len() - 1], Ending::Lf),
                    };
                    match self.phase {
                        Phase::Data => self.data_line(content, ending),
                        _ => self.command_line(content),
                    }
                }
                Some(i) => {
                    // The LF is there but beyond the limit.
                    self.input.drain(..=i);
                    self.overlong_line();
                }
                None if self.input.len() >= limit => {
                    self.input.clear();
                    self.discarding = true;
                    return None;
                }
                None => return None,
            }
        }
    }

    /// Reports the sink's verdict for the last [`Output::Deliver`]: queues one reply per
    /// recipient and resets the transaction.
    pub(crate) fn delivered(&mut self, result: &Result<(), IngestError>) {
        if self.phase != Phase::AwaitingDelivery {
            return;
        }
        for rcpt in &self.rcpts {
            let reply = match result {
                Ok(()) => Reply::new(250, format!("2.0.0 <{rcpt}> delivered")),
                Err(IngestError::Transient(why)) => Reply::new(
                    451,
                    format!("4.3.0 <{rcpt}> temporary failure: {}", one_line(why, 200)),
                ),
                Err(IngestError::Permanent(why)) => {
                    Reply::new(554, format!("5.6.0 {}", one_line(why, 200)))
                }
            };
            self.out.push_back(Output::Reply(reply));
        }
        self.reset_transaction();
        self.phase = Phase::Command;
    }

    fn reply(&mut self, code: u16, text: impl Into<String>) {
        self.out.push_back(Output::Reply(Reply::new(code, text)));
    }

    fn error(&mut self, code: u16, text: impl Into<String>) {
        self.reply(code, text);
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            self.reply(421, "4.7.0 too many errors, closing connection");
            self.close();
        }
    }

    fn close(&mut self) {
        self.out.push_back(Output::Close);
        self.phase = Phase::Closed;
        self.input.clear();
    }

    fn reset_transaction(&mut self) {
        self.mail_from = None;
        self.rcpts.clear();
        self.data = Vec::new();
        self.data_error = None;
        self.prev_crlf = true;
    }

    fn overlong_line(&mut self) {
        match self.phase {
            Phase::Data => {
                self.data_error.get_or_insert(DataError::LineTooLong);
                self.data = Vec::new();
                self.prev_crlf = true;
            }
            _ => self.error(500, "5.5.2 line too long"),
        }
    }

    fn data_line(&mut self, content: &[u8], ending: Ending) {
        if content == b"." && ending == Ending::Crlf && self.prev_crlf {
            self.end_of_data();
            return;
        }
        self.prev_crlf = ending == Ending::Crlf;
        let content = content.strip_prefix(b".").unwrap_or(content);
        if self.data_error.is_some() {
            return;
        }
        if self.data.len() + content.len() + 2 > self.limits.max_message_bytes {
            self.data_error = Some(DataError::TooBig);
            self.data = Vec::new();
            return;
        }
        self.data.extend_from_slice(content);
        self.data.extend_from_slice(b"\r\n");
    }

    fn end_of_data(&mut self) {
        match self.data_error {
            Some(err) => {
                let text = match err {
                    DataError::TooBig => format!(
                        "5.3.4 message exceeds the size limit of {} bytes",
                        self.limits.max_message_bytes
                    ),
                    DataError::LineTooLong => "5.5.2 message line too long".to_owned(),
                };
                let code = match err {
                    DataError::TooBig => 552,
                    DataError::LineTooLong => 554,
                };
                for _ in 0..self.rcpts.len() {
                    self.reply(code, text.clone());
                }
                self.reset_transaction();
                self.phase = Phase::Command;
            }
            None => {
                let delivery = Delivery {
                    mail_from: self.mail_from.clone().unwrap_or_default(),
                    rcpt_to: self.rcpts.clone(),
                    raw: std::mem::take(&mut self.data),
                };
                self.out.push_back(Output::Deliver(delivery));
                self.phase = Phase::AwaitingDelivery;
            }
        }
    }

    fn command_line(&mut self, line: &[u8]) {
        let Ok(line) = std::str::from_utf8(line) else {
            self.error(500, "5.5.2 command is not UTF-8");
            return;
        };
        let (verb, args) = match line.split_once(' ') {
            Some((v, a)) => (v, a.trim()),
            None => (line, ""),
        };
        match verb.to_ascii_uppercase().as_str() {
            "LHLO" => self.lhlo(args),
            "HELO" | "EHLO" => self.error(500, "5.5.1 this is LMTP, say LHLO"),
            "MAIL" => self.mail(args),
            "RCPT" => self.rcpt(args),
            "DATA" => self.data_cmd(args),
            "RSET" => {
                self.reset_transaction();
                self.reply(250, "2.0.0 OK");
            }
            "NOOP" => self.reply(250, "2.0.0 OK"),
            "QUIT" => {
                self.reply(
                    221,
                    format!("2.0.0 {} closing connection", self.limits.hostname),
                );
                self.close();
            }
            "VRFY" | "EXPN" | "BDAT" | "STARTTLS" | "AUTH" | "TURN" | "ETRN" => {
                self.error(502, "5.5.1 command not implemented")
            }
            "" => self.error(500, "5.5.2 empty command"),
            _ => self.error(500, "5.5.2 unrecognized command"),
        }
    }

    fn lhlo(&mut self, args: &str) {
        if args.is_empty() || args.contains(char::is_whitespace) {
            self.error(501, "5.5.4 syntax: LHLO <hostname>");
            return;
        }
        self.reset_transaction();
        self.greeted = true;
        self.out.push_back(Output::Reply(Reply {
            code: 250,
            lines: vec![
                self.limits.hostname.clone(),
                "PIPELINING".to_owned(),
                "ENHANCEDSTATUSCODES".to_owned(),
                "8BITMIME".to_owned(),
                format!("SIZE {}", self.limits.max_message_bytes),
            ],
        }));
    }

    fn mail(&mut self, args: &str) {
        if !self.greeted {
            self.error(503, "5.5.1 say LHLO first");
            return;
        }
        if self.mail_from.is_some() {
            self.error(503, "5.5.1 nested MAIL command");
            return;
        }
        let Some(rest) = strip_prefix_ci(args, "FROM:") else {
            self.error(501, "5.5.4 syntax: MAIL FROM:<address>");
            return;
        };
        let Some((addr, params)) = parse_path(rest) else {
            self.error(501, "5.1.7 bad sender address syntax");
            return;
        };
        if !addr.is_empty() && !valid_mailbox(addr) {
            self.error(501, "5.1.7 bad sender address syntax");
            return;
        }
        for param in params.split_ascii_whitespace() {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key.to_ascii_uppercase().as_str() {
                "SIZE" => match value.parse::<u64>() {
                    Ok(n) if n > self.limits.max_message_bytes as u64 => {
                        self.reply(552, "5.3.4 message size exceeds fixed limit");
                        return;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        self.error(501, "5.5.4 bad SIZE parameter");
                        return;
                    }
                },
                "BODY" if value.eq_ignore_ascii_case("7BIT") => {}
                "BODY" if value.eq_ignore_ascii_case("8BITMIME") => {}
                _ => {
                    self.error(555, "5.5.4 unsupported MAIL parameter");
                    return;
                }
            }
        }
        self.mail_from = Some(addr.to_owned());
        self.reply(250, "2.1.0 OK");
    }

    fn rcpt(&mut self, args: &str) {
        if self.mail_from.is_none() {
            self.error(503, "5.5.1 need MAIL before RCPT");
            return;
        }
        let Some(rest) = strip_prefix_ci(args, "TO:") else {
            self.error(501, "5.5.4 syntax: RCPT TO:<address>");
            return;
        };
        let Some((addr, params)) = parse_path(rest) else {
            self.error(501, "5.1.3 bad recipient address syntax");
            return;
        };
        if !params.trim().is_empty() {
            self.error(555, "5.5.4 unsupported RCPT parameter");
            return;
        }
        if !valid_mailbox(addr) {
            self.error(501, "5.1.3 bad recipient address syntax");
            return;
        }
        if !self.domain_accepted(addr) {
            self.reply(550, format!("5.1.1 <{addr}> no such user here"));
            return;
        }
        if self.rcpts.len() >= self.limits.max_recipients {
            self.reply(452, "4.5.3 too many recipients");
            return;
        }
        self.rcpts.push(addr.to_owned());
        self.reply(250, "2.1.5 OK");
    }

    fn data_cmd(&mut self, args: &str) {
        if !args.is_empty() {
            self.error(501, "5.5.4 DATA takes no arguments");
        } else if self.mail_from.is_none() {
            self.error(503, "5.5.1 need MAIL before DATA");
        } else if self.rcpts.is_empty() {
            self.error(503, "5.5.1 no valid recipients");
        } else {
            self.reply(354, "start mail input; end with <CRLF>.<CRLF>");
            self.phase = Phase::Data;
            self.data = Vec::new();
            self.data_error = None;
            self.prev_crlf = true;
        }
    }

    fn domain_accepted(&self, addr: &str) -> bool {
        if self.limits.accept_domains.is_empty() {
            return true;
        }
        let Some((_, domain)) = addr.rsplit_once('@') else {
            return false;
        };
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.limits.accept_domains.contains(&domain)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `<addr> params` (tolerating a space before `<`) → (addr without brackets, params). A source
/// route (`<@a,@b:user@d>`) is dropped.
fn parse_path(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start().strip_prefix('<')?;
    let end = s.find('>')?;
    let (addr, rest) = (&s[..end], &s[end + 1..]);
    if !rest.is_empty() && !rest.starts_with(' ') {
        return None;
    }
    let addr = match addr.strip_prefix('@') {
        Some(route) => route.split_once(':')?.1,
        None => addr,
    };
    Some((addr, rest))
}

/// `local@domain`, printable, no spaces, within length limits.
fn valid_mailbox(addr: &str) -> bool {
    if addr.is_empty() || addr.len() > MAX_ADDRESS {
        return false;
    }
    if addr
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>')
    {
        return false;
    }
    match addr.rsplit_once('@') {
        Some((local, domain)) => !local.is_empty() && !domain.is_empty(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            hostname: "lmtp.test".to_owned(),
            max_message_bytes: 200,
            max_recipients: 3,
            accept_domains: vec!["bridge.example.test".to_owned()],
        }
    }

    /// Feeds `input` in one go and returns the wire replies, `DELIVER` markers and `CLOSE`.
    fn run(server: &mut Server, input: &[u8]) -> Vec<String> {
        server.receive(input);
        drain(server)
    }

    fn drain(server: &mut Server) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(o) = server.poll() {
            match o {
                Output::Reply(r) => out.push(r.to_wire().trim_end().to_owned()),
                Output::Deliver(d) => out.push(format!(
                    "DELIVER from={} to={} raw={:?}",
                    d.mail_from,
                    d.rcpt_to.join(","),
                    String::from_utf8_lossy(&d.raw)
                )),
                Output::Close => out.push("CLOSE".to_owned()),
            }
        }
        out
    }

    fn codes(lines: &[String]) -> Vec<String> {
        lines
            .iter()
            .map(|l| l.get(..3).unwrap_or(l).to_owned())
            .collect()
    }

    fn greeted() -> Server {
        let mut s = Server::new(limits());
        let out = run(&mut s, b"LHLO mta.test\r\n");
        assert_eq!(out.len(), 1);
        s
    }

    #[test]
    fn lhlo_advertises_extensions() {
        let mut s = Server::new(limits());
        assert_eq!(s.greeting().to_wire(), "220 lmtp.test LMTP ready\r\n");
        let out = run(&mut s, b"LHLO mta.test\r\n");
        assert_eq!(
            out,
            vec![
                "250-lmtp.test\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SIZE 200"
            ]
        );
    }

    #[test]
    fn full_transaction_with_dot_unstuffing() {
        let mut s = greeted();
        let out = run(
            &mut s,
            b"MAIL FROM:<a@example.test> BODY=8BITMIME SIZE=10\r\nRCPT TO:<x@bridge.example.test>\r\nRCPT TO:<y@Bridge.Example.Test>\r\nDATA\r\n",
        );
        assert_eq!(codes(&out), vec!["250", "250", "250", "354"]);
        let out = run(&mut s, b"Subject: hi\r\n\r\n..dot\r\n.\r\n");
        assert_eq!(
            out,
            vec![
                "DELIVER from=a@example.test to=x@bridge.example.test,y@Bridge.Example.Test raw=\"Subject: hi\\r\\n\\r\\n.dot\\r\\n\""
            ]
        );
        assert!(s.awaiting_delivery());
        assert_eq!(s.poll(), None);
        s.delivered(&Ok(()));
        assert_eq!(
            drain(&mut s),
            vec![
                "250 2.0.0 <x@bridge.example.test> delivered",
                "250 2.0.0 <y@Bridge.Example.Test> delivered"
            ]
        );
        // A new transaction can follow.
        let out = run(&mut s, b"MAIL FROM:<>\r\n");
        assert_eq!(out, vec!["250 2.1.0 OK"]);
    }

    #[test]
    fn verdicts_become_per_recipient_replies() {
        for (verdict, want) in [
            (
                Err(IngestError::Transient("db\r\nlocked".to_owned())),
                vec![
                    "451 4.3.0 <x@bridge.example.test> temporary failure: db  locked",
                    "451 4.3.0 <y@bridge.example.test> temporary failure: db  locked",
                ],
            ),
            (
                Err(IngestError::Permanent("unparsable".to_owned())),
                vec!["554 5.6.0 unparsable", "554 5.6.0 unparsable"],
            ),
        ] {
            let mut s = greeted();
            run(
                &mut s,
                b"MAIL FROM:<a@e.test>\r\nRCPT TO:<x@bridge.example.test>\r\nRCPT TO:<y@bridge.example.test>\r\nDATA\r\nhi\r\n.\r\n",
            );
            s.delivered(&verdict);
            assert_eq!(drain(&mut s), want);
        }
    }

    #[test]
    fn foreign_domain_rejected_but_others_kept() {
        let mut s = greeted();
        let out = run(
            &mut s,
            b"MAIL FROM:<a@e.test>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<x@bridge.example.test>\r\nRCPT TO:<postmaster>\r\nDATA\r\nhi\r\n.\r\n",
        );
        assert_eq!(
            out,
            vec![
                "250 2.1.0 OK",
                "550 5.1.1 <bob@example.test> no such user here",
                "250 2.1.5 OK",
                "501 5.1.3 bad recipient address syntax",
                "354 start mail input; end with <CRLF>.<CRLF>",
                "DELIVER from=a@e.test to=x@bridge.example.test raw=\"hi\\r\\n\"",
            ]
        );
    }

    #[test]
    fn sequence_errors() {
        let mut s = Server::new(limits());
        let out = run(
            &mut s,
            b"MAIL FROM:<a@e.test>\r\nEHLO x\r\nLHLO x\r\nRCPT TO:<x@bridge.example.test>\r\nDATA\r\nMAIL FROM:<a@e.test>\r\nDATA\r\nMAIL FROM:<b@e.test>\r\nRSET\r\nDATA\r\n",
        );
        assert_eq!(
            codes(&out),
            vec![
                "503", "500", "250", "503", "503", "250", "503", "503", "250", "503"
            ]
        );
    }

    #[test]
    fn garbage_and_hostile_commands() {
        let mut s = greeted();
        let out = run(
            &mut s,
            b"\r\nFOO bar\r\n\xff\xfe\r\nMAIL FROM:a@e.test\r\nMAIL FROM:<a b@e.test>\r\nMAIL FROM:<a@e.test> X=1\r\nMAIL FROM:<a@e.test> SIZE=999\r\nMAIL FROM:<a@e.test>junk\r\nVRFY x\r\nNOOP\r\n",
        );
        assert_eq!(
            codes(&out),
            vec![
                "500", "500", "500", "501", "501", "555", "552", "501", "502", "250"
            ]
        );
    }

    #[test]
    fn too_many_errors_closes() {
        let mut s = greeted();
        let out = run(&mut s, &b"X\r\n".repeat(25));
        assert_eq!(out.len(), 20 + 2);
        assert_eq!(out[20], "421 4.7.0 too many errors, closing connection");
        assert_eq!(out[21], "CLOSE");
        assert!(run(&mut s, b"NOOP\r\n").is_empty());
    }

    #[test]
    fn bare_lf_commands_are_tolerated() {
        let mut s = Server::new(limits());
        let out = run(
            &mut s,
            b"LHLO x\nMAIL FROM:<a@e.test>\nRCPT TO:<x@bridge.example.test>\nNOOP\n",
        );
        assert_eq!(codes(&out), vec!["250", "250", "250", "250"]);
    }

    #[test]
    fn bare_lf_in_data_does_not_end_it_and_is_normalised() {
        let mut s = greeted();
        run(
            &mut s,
            b"MAIL FROM:<a@e.test>\r\nRCPT TO:<x@bridge.example.test>\r\nDATA\r\n",
        );
        // "\n.\n" and "\n.\r\n" are not end-of-data; only CRLF.CRLF is.
        let out = run(&mut s, b"a\n.\nb\n.\r\nc\r\n.\r\n");
        assert_eq!(
            out,
            vec![
                "DELIVER from=a@e.test to=x@bridge.example.test raw=\"a\\r\\n\\r\\nb\\r\\n\\r\\nc\\r\\n\""
            ]
        );
    }

    #[test]
    fn overlong_command_line_is_rejected_and_skipped() {
        let mut s = greeted();
        let mut input = vec![b'A'; 3 * MAX_COMMAND_LINE];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        // Fed in small pieces, as a slow client would.
        let mut out = Vec::new();
        for chunk in input.chunks(100) {
            out.extend(run(&mut s, chunk));
        }
        assert_eq!(out, vec!["500 5.5.2 line too long", "250 2.0.0 OK"]);
        assert!(s.input.len() <= MAX_COMMAND_LINE);
    }

    #[test]
    fn overlong_data_line_refuses_the_message() {
        let mut s = Server::new(Limits {
            max_message_bytes: 10 * MAX_DATA_LINE,
            ..limits()
        });
        run(
            &mut s,
            b"LHLO x\r\nMAIL FROM:<a@e.test>\r\nRCPT TO:<x@bridge.example.test>\r\nDATA\r\n",
        );
        let mut data = vec![b'x'; MAX_DATA_LINE + 1];
        data.extend_from_slice(b"\r\nshort\r\n.\r\nNOOP\r\n");
        let mut out = Vec::new();
        for chunk in data.chunks(4096) {
            out.extend(run(&mut s, chunk));
        }
        assert_eq!(out, vec!["554 5.5.2 message line too long", "250 2.0.0 OK"]);
    }

    #[test]
    fn size_limit_drains_then_552_per_recipient() {
        let mut s = greeted();
        run(
            &mut s,
            b"MAIL FROM:<a@e.test>\r\nRCPT TO:<x@bridge.example.test>\r\nRCPT TO:<y@bridge.example.test>\r\nDATA\r\n",
        );
        let body = b"0123456789012345678901234567890123456789\r\n".repeat(10);
        let mut out = run(&mut s, &body);
        assert!(out.is_empty());
        assert!(s.data.is_empty(), "nothing stored past the limit");
        out.extend(run(&mut s, b".\r\nNOOP\r\n"));
        assert_eq!(
            out,
            vec![
                "552 5.3.4 message exceeds the size limit of 200 bytes",
                "552 5.3.4 message exceeds the size limit of 200 bytes",
                "250 2.0.0 OK"
            ]
        );
    }

    #[test]
    fn pipelined_commands_after_data_wait_for_the_verdict() {
        let mut s = greeted();
        let out = run(
            &mut s,
            b"MAIL FROM:<a@e.test>\r\nRCPT TO:<x@bridge.example.test>\r\nDATA\r\nhi\r\n.\r\nMAIL FROM:<b@e.test>\r\nRCPT TO:<y@bridge.example.test>\r\nDATA\r\nho\r\n.\r\nQUIT\r\n",
        );
        assert_eq!(codes(&out), vec!["250", "250", "354", "DEL"]);
        s.delivered(&Ok(()));
        let out = drain(&mut s);
        assert_eq!(codes(&out), vec!["250", "250", "250", "354", "DEL"]);
        assert!(out[4].contains("from=b@e.test"));
        s.delivered(&Err(IngestError::Transient("later".to_owned())));
        let out = drain(&mut s);
        assert_eq!(codes(&out), vec!["451", "221", "CLO"]);
    }

    #[test]
    fn too_many_recipients() {
        let mut s = greeted();
        let out = run(
            &mut s,
            b"MAIL FROM:<a@e.test>\r\nRCPT TO:<a@bridge.example.test>\r\nRCPT TO:<b@bridge.example.test>\r\nRCPT TO:<c@bridge.example.test>\r\nRCPT TO:<d@bridge.example.test>\r\n",
        );
        assert_eq!(codes(&out), vec!["250", "250", "250", "250", "452"]);
    }

    #[test]
    fn source_route_and_space_before_bracket() {
        let mut s = greeted();
        let out = run(
            &mut s,
            b"mail from: <a@e.test>\r\nrcpt to:<@relay.test:x@bridge.example.test>\r\nDATA\r\n.\r\n",
        );
        assert_eq!(codes(&out), vec!["250", "250", "354", "DEL"]);
        assert!(out[3].contains("to=x@bridge.example.test "));
    }

    #[test]
    fn empty_accept_domains_accepts_any() {
        let mut s = Server::new(Limits {
            accept_domains: Vec::new(),
            ..limits()
        });
        let out = run(
            &mut s,
            b"LHLO x\r\nMAIL FROM:<a@e.test>\r\nRCPT TO:<anyone@anywhere.test>\r\n",
        );
        assert_eq!(codes(&out), vec!["250", "250", "250"]);
    }
}
