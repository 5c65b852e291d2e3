//! Codec throughput: `cargo bench -p coi-side --bench codec`.
//! A plain `main` (harness = false) timed with `Instant`, no bench framework.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use coi_side::codec::{
    Mailbox, OutgoingBody, OutgoingEmail, OutgoingGroup, ParseLimits, build, parse,
};

fn corpus() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut out = Vec::new();
    for dir in ["deltachat-2.65", "classic"] {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(dir))
            .expect("testdata")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            out.push(std::fs::read(path).expect("read"));
        }
    }
    out
}

fn typical_group_message() -> OutgoingEmail {
    OutgoingEmail {
        from: Mailbox::new("Bob (Matrix)", "=40bob=3amatrix.test@bridge.example.test"),
        to: vec![
            Mailbox::new("Alice", "alice@example.test"),
            Mailbox::new("Carol", "carol@example.test"),
            Mailbox::addr_only("dave@example.test"),
        ],
        date_unix: 1_795_811_400,
        message_id: "4f0c1a9e-0000-4000-8000-000000000001@bridge.example.test".to_owned(),
        subject: "Re: Spike Group".to_owned(),
        in_reply_to: Some("parent@localhost".to_owned()),
        references: vec!["root@localhost".to_owned(), "parent@localhost".to_owned()],
        group: Some(OutgoingGroup {
            name: "Spike Group".to_owned(),
            name_timestamp: Some(1_795_811_304),
            member_timestamps: vec![1_795_811_304; 3],
            ..OutgoingGroup::default()
        }),
        body: OutgoingBody::Text {
            text: "Hello from Matrix! This is a typical short chat message, with ümlauts."
                .to_owned(),
            html: None,
            quote: Some("the message being answered".to_owned()),
            forwarded: false,
        },
        ..OutgoingEmail::default()
    }
}

/// Runs `f` in rounds until `budget` has passed; returns operations per second.
fn measure(budget: Duration, ops_per_round: usize, mut f: impl FnMut()) -> (f64, usize) {
    let start = Instant::now();
    let mut ops = 0usize;
    while start.elapsed() < budget {
        f();
        ops += ops_per_round;
    }
    (ops as f64 / start.elapsed().as_secs_f64(), ops)
}

fn main() {
    let corpus = corpus();
    let limits = ParseLimits::default();
    let bytes: usize = corpus.iter().map(Vec::len).sum();
    let budget = Duration::from_secs(3);

    let (rate, ops) = measure(budget, corpus.len(), || {
        for raw in &corpus {
            let _ = black_box(parse(black_box(raw), &limits));
        }
    });
    println!(
        "parse: {rate:>10.0} messages/s ({ops} messages, {} fixtures, avg {} bytes, {:.1} MiB/s)",
        corpus.len(),
        bytes / corpus.len().max(1),
        rate * (bytes as f64 / corpus.len().max(1) as f64) / (1024.0 * 1024.0)
    );

    let mail = typical_group_message();
    let size = build(&mail).map(|b| b.len()).unwrap_or(0);
    let (rate, ops) = measure(budget, 1, || {
        let _ = black_box(build(black_box(&mail)));
    });
    println!("build: {rate:>10.0} messages/s ({ops} messages, {size} bytes each)");

    let built = build(&mail).unwrap_or_default();
    let (rate, ops) = measure(budget, 1, || {
        let _ = black_box(parse(black_box(&built), &limits));
    });
    println!("parse(built): {rate:>10.0} messages/s ({ops} messages)");
}
