//! Table of text simplification cases (chat and classic mail).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use coi_side::codec::simplify;

struct Case {
    name: &'static str,
    input: &'static str,
    is_chat: bool,
    text: &'static str,
    top_quote: Option<&'static str>,
    footer: Option<&'static str>,
    forwarded: bool,
    cut: bool,
}

const BASE: Case = Case {
    name: "",
    input: "",
    is_chat: true,
    text: "",
    top_quote: None,
    footer: None,
    forwarded: false,
    cut: false,
};

const CASES: &[Case] = &[
    Case {
        name: "plain",
        input: "Hello\r\n",
        text: "Hello",
        ..BASE
    },
    Case {
        name: "dc full layout",
        input: "---------- Forwarded message ----------\r\nFrom: Delta Chat\r\n\r\n> q1\r\n> q2\r\n\r\nuser text\r\n\r\n-- \r\nstatus line",
        text: "user text",
        top_quote: Some("q1\nq2"),
        footer: Some("status line"),
        forwarded: true,
        ..BASE
    },
    Case {
        name: "footer with two spaces",
        input: "a\n--  \nsig",
        text: "a",
        footer: Some("sig"),
        ..BASE
    },
    Case {
        name: "bare dashes are text in chats",
        input: "a\n--\nb",
        text: "a\n--\nb",
        ..BASE
    },
    Case {
        name: "bare dashes are a footer in classic mail",
        input: "a\n--\nb",
        is_chat: false,
        text: "a",
        footer: Some("b"),
        ..BASE
    },
    Case {
        name: "zwsp escape",
        input: "-\u{200b}- x\n-\u{200b}-",
        text: "-- x\n--",
        ..BASE
    },
    Case {
        name: "quote needs empty line after",
        input: "> a\nb",
        text: "> a\nb",
        ..BASE
    },
    Case {
        name: "quote only",
        input: "> a\n> b",
        text: "",
        top_quote: Some("a\nb"),
        ..BASE
    },
    Case {
        name: "leading empty line: no quote",
        input: "\n> a",
        text: "> a",
        ..BASE
    },
    Case {
        name: "chat keeps bottom quote",
        input: "reply\n\nOn Monday Bob wrote:\n> old",
        text: "reply\n\nOn Monday Bob wrote:\n> old",
        ..BASE
    },
    Case {
        name: "classic bottom quote with wrapped attribution",
        input: "reply\n\nOn Fri, 27 Nov 2026 at 20:28, Alice Example <\nalice@example.test> wrote:\n> old\n>\n> older\n\n",
        is_chat: false,
        text: "reply",
        cut: true,
        ..BASE
    },
    Case {
        name: "french attribution",
        input: "Merci !\n\nLe 27/11/2026 à 20:28, Alice a écrit :\n> Bonjour",
        is_chat: false,
        text: "Merci !",
        cut: true,
        ..BASE
    },
    Case {
        name: "whole message quoted is kept",
        input: "> only a quote\n> nothing else",
        is_chat: false,
        text: "",
        top_quote: Some("only a quote\nnothing else"),
        ..BASE
    },
    Case {
        name: "classic interleaved quote stays",
        input: "> question?\nanswer\n> question 2?\nanswer 2",
        is_chat: false,
        text: "> question?\nanswer\n> question 2?\nanswer 2",
        ..BASE
    },
    Case {
        name: "original message separator",
        input: "ok\n\n-----Original Message-----\nFrom: x\nSent: y\n\nold text",
        is_chat: false,
        text: "ok",
        cut: true,
        ..BASE
    },
    Case {
        name: "separator far from the end is text",
        input: "intro\n***\n1\n2\n3\n4\n5\n6\n7",
        is_chat: false,
        text: "intro\n***\n1\n2\n3\n4\n5\n6\n7",
        ..BASE
    },
    Case {
        name: "short trailing footer is cut",
        input: "body\n\n~~~\nsent from my toaster",
        is_chat: false,
        text: "body",
        cut: true,
        ..BASE
    },
    Case {
        name: "crlf and cr",
        input: "a\r\nb\rc",
        text: "a\nb\nc",
        ..BASE
    },
    Case {
        name: "empty",
        input: "",
        text: "",
        ..BASE
    },
];

#[test]
fn simplify_table() {
    for c in CASES {
        let s = simplify(c.input, c.is_chat);
        let got = (
            s.text.as_str(),
            s.top_quote.as_deref(),
            s.footer.as_deref(),
            s.is_forwarded,
            s.text_was_cut,
        );
        let want = (c.text, c.top_quote, c.footer, c.forwarded, c.cut);
        assert_eq!(got, want, "case {:?}", c.name);
    }
}
