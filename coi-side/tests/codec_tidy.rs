//! Tidy check: the codec stays sans-I/O. No file under `src/codec/` may
//! mention an async runtime, a database, a mail transport or a network API.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::path::{Path, PathBuf};

const FORBIDDEN: &[&str] = &[
    "tokio",
    "sqlx",
    "async_imap",
    "lettre",
    "reqwest",
    "std::net",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("codec dir")
        .filter_map(|e| e.ok())
    {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn codec_is_sans_io() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/codec");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    assert!(
        files.len() >= 5,
        "expected the codec sources in {}",
        dir.display()
    );
    let mut offences = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        for (n, line) in text.lines().enumerate() {
            for word in FORBIDDEN {
                if line.contains(word) {
                    offences.push(format!("{}:{}: mentions `{word}`", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "codec must stay sans-I/O:\n{}",
        offences.join("\n")
    );
}

#[test]
fn header_names_are_spelled_only_in_headers_rs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/codec");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let names = [
        "\"Chat-",
        "\"Content-Type",
        "\"Message-ID",
        "\"In-Reply-To",
        "\"References\"",
        "\"Autocrypt\"",
    ];
    for file in files.iter().filter(|f| !f.ends_with("headers.rs")) {
        let text = std::fs::read_to_string(file).expect("read");
        for name in names {
            assert!(
                !text.contains(name),
                "{}: header name literal {name}…; use HeaderDef",
                file.display()
            );
        }
    }
}
