//! The NDJSON progress streams of checkpoint create and restore (Sprites API §3.6): splitting
//! the body into lines, reading each line as a [`StreamEvent`], and the rules for what ends a
//! stream. Pure: the HTTP side is [`crate::client::EventStream`].

use anyhow::{anyhow, bail, Result};
use serde_json::Value;
use wisp_api::checkpoint::StreamEvent;

/// Longest line accepted: a progress line is a short sentence.
pub const MAX_LINE: usize = 1 << 20;

/// Splits a byte stream that arrives in arbitrary chunks into lines.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Appends a chunk; fails when a line grows beyond [`MAX_LINE`].
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(chunk);
        let pending = match self.buf.iter().rposition(|&b| b == b'\n') {
            Some(i) => self.buf.len() - i - 1,
            None => self.buf.len(),
        };
        if pending > MAX_LINE {
            bail!("wispd sent a progress line longer than {MAX_LINE} bytes");
        }
        Ok(())
    }

    /// The next complete line, without its `\n` (or `\r\n`).
    pub fn next_line(&mut self) -> Option<Vec<u8>> {
        let i = self.buf.iter().position(|&b| b == b'\n')?;
        let mut line: Vec<u8> = self.buf.drain(..=i).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Some(line)
    }

    /// What is left after the last `\n` once the stream has ended.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let rest = std::mem::take(&mut self.buf);
        (!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest)
    }
}

/// Reads one line. Blank lines and events of a type this client does not know are skipped
/// (`None`); an `error` line is understood even when other fields are missing.
pub fn parse_event(line: &[u8]) -> Result<Option<StreamEvent>> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(ev) = serde_json::from_str::<StreamEvent>(text) {
        return Ok(Some(ev));
    }
    let short: String = text.chars().take(200).collect();
    let v: Value = serde_json::from_str(text)
        .map_err(|_| anyhow!("wispd sent a progress line that is not JSON: {short}"))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    match v.get("type").and_then(Value::as_str) {
        Some("error") => Ok(Some(StreamEvent::Error {
            error: s("error")
                .or_else(|| s("data"))
                .or_else(|| s("message"))
                .filter(|e| !e.trim().is_empty())
                .unwrap_or_else(|| "the operation failed (no reason given)".into()),
            time: s("time").unwrap_or_default(),
        })),
        Some("info" | "complete") | None => {
            bail!("wispd sent a progress line this client does not understand: {short}")
        }
        Some(_) => Ok(None),
    }
}

/// A successful end of a stream: the `complete` line's text and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    pub data: String,
    pub id: Option<String>,
}

/// What one event means for the operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Still running; the info line's text.
    Progress(String),
    Done(Completed),
    /// Failed, with the server's reason (also when the HTTP status was 200).
    Failed(String),
}

pub fn step(ev: StreamEvent) -> Step {
    match ev {
        StreamEvent::Info { data, .. } => Step::Progress(data),
        StreamEvent::Complete { data, id, .. } => Step::Done(Completed { data, id }),
        StreamEvent::Error { error, .. } => Step::Failed(error),
    }
}

/// The checkpoint id in a `complete` line: its `id` field, else the `<id>` of
/// "Checkpoint <id> created successfully" / "Restore from <id> complete".
pub fn completed_id(c: &Completed) -> Option<String> {
    if let Some(id) = c.id.as_deref().filter(|i| !i.is_empty()) {
        return Some(id.to_string());
    }
    let words: Vec<&str> = c.data.split_whitespace().collect();
    let id = match words.as_slice() {
        ["Checkpoint", id, "created", ..] => id,
        ["Restore", "from", id, ..] => id,
        _ => return None,
    };
    wisp_api::checkpoint::is_valid_checkpoint_id(id).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c).unwrap();
            while let Some(l) = s.next_line() {
                out.push(String::from_utf8(l).unwrap());
            }
        }
        out.extend(s.finish().map(|l| String::from_utf8(l).unwrap()));
        out
    }

    #[test]
    fn splits_across_chunks() {
        assert_eq!(
            lines_of(&[b"{\"a\"", b":1}\n{\"b\":2}\r\n\n{\"c", b"\":3}"]),
            vec![r#"{"a":1}"#, r#"{"b":2}"#, "", r#"{"c":3}"#]
        );
        assert_eq!(lines_of(&[b"x\n", b"  \n"]), vec!["x", "  "]);
        assert!(lines_of(&[b"x\n", b" \t"]).len() == 1);
        let mut s = LineSplitter::default();
        assert!(s.push(&vec![b'x'; MAX_LINE + 1]).is_err());
        let mut s = LineSplitter::default();
        let mut big = vec![b'x'; MAX_LINE];
        big.push(b'\n');
        assert!(s.push(&big).is_ok() && s.push(b"short").is_ok());
    }

    #[test]
    fn events() {
        let p = |l: &str| parse_event(l.as_bytes());
        assert_eq!(
            step(
                p(r#"{"type":"info","data":"Creating checkpoint...","time":"t"}"#)
                    .unwrap()
                    .unwrap()
            ),
            Step::Progress("Creating checkpoint...".into())
        );
        assert_eq!(
            step(
                p(r#"{"type":"complete","data":"Checkpoint v3 created successfully","time":"t","id":"v3"}"#)
                    .unwrap()
                    .unwrap()
            ),
            Step::Done(Completed {
                data: "Checkpoint v3 created successfully".into(),
                id: Some("v3".into())
            })
        );
        assert_eq!(
            step(
                p(r#"{"type":"error","error":"disk full","time":"t"}"#)
                    .unwrap()
                    .unwrap()
            ),
            Step::Failed("disk full".into())
        );
        // An error line without `time`, or with its text elsewhere, is still an error.
        assert_eq!(
            step(p(r#"{"type":"error","data":"boom"}"#).unwrap().unwrap()),
            Step::Failed("boom".into())
        );
        assert!(matches!(
            step(p(r#"{"type":"error"}"#).unwrap().unwrap()),
            Step::Failed(_)
        ));
        assert_eq!(p("").unwrap(), None);
        assert_eq!(p(r#"{"type":"debug","data":"x"}"#).unwrap(), None);
        assert!(p("not json").is_err());
        assert!(p(r#"{"type":"info"}"#).is_err());
        assert!(p(r#"{"data":"x"}"#).is_err());
    }

    #[test]
    fn ids_from_completion() {
        let c = |data: &str, id: Option<&str>| Completed {
            data: data.into(),
            id: id.map(str::to_string),
        };
        assert_eq!(
            completed_id(&c("whatever", Some("v7"))).as_deref(),
            Some("v7")
        );
        assert_eq!(
            completed_id(&c("Checkpoint v3 created successfully", None)).as_deref(),
            Some("v3")
        );
        assert_eq!(
            completed_id(&c("Restore from v1 complete", None)).as_deref(),
            Some("v1")
        );
        assert_eq!(completed_id(&c("Checkpoint ../x created", None)), None);
        assert_eq!(completed_id(&c("done", Some(""))), None);
    }
}
