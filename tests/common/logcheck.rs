//! Parsing the shared log file in tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;

/// One parsed record: (pid, role, level, target, message).
pub struct Line {
    pub pid: u32,
    pub role: String,
    pub level: String,
    pub target: String,
    pub message: String,
}

/// Parses "2026-11-21T21:41:07.123456Z pid role LEVEL target: message"; None if malformed.
pub fn parse(line: &str) -> Option<Line> {
    let mut it = line.splitn(5, ' ');
    let time = it.next()?;
    if time.len() != 27 || !time.ends_with('Z') || &time[10..11] != "T" {
        return None;
    }
    let pid = it.next()?.parse().ok()?;
    let role = it.next()?.to_string();
    let level = it.next()?.to_string();
    let (target, message) = it.next()?.split_once(": ")?;
    Some(Line {
        pid,
        role,
        level,
        target: target.to_string(),
        message: message.to_string(),
    })
}

/// Checks that every line is whole and well formed; returns each pid's messages in order.
pub fn by_pid(text: &str) -> HashMap<u32, Vec<String>> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the file ends in half a line"
    );
    let mut out: HashMap<u32, Vec<String>> = HashMap::new();
    for (n, l) in text.lines().enumerate() {
        let line = parse(l).unwrap_or_else(|| panic!("line {} is torn or malformed: {l:?}", n + 1));
        out.entry(line.pid).or_default().push(line.message);
    }
    out
}
