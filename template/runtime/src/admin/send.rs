//! `send`: adds test messages to the stream, one entry with a `data` field
//! per JSON document, pipelined, with a progress bar for large batches.

use std::fmt;
use std::io::BufRead;

use indicatif::{ProgressBar, ProgressDrawTarget};

use super::{Admin, AdminError};

/// Entries per pipelined round trip.
const SEND_CHUNK: usize = 1_000;
/// Below this many documents no progress bar is drawn.
const PROGRESS_FROM: usize = 10_000;

/// The documents to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Documents {
    /// One document, given on the command line.
    One(String),
    /// This many generated sample messages.
    Samples(usize),
    /// One document per non-empty line of standard input.
    Stdin,
}

/// One document and where it came from: its line of standard input,
/// counting blank lines, or its place among the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// 1-based: the line a refusal names.
    pub line: usize,
    /// The JSON text.
    pub text: String,
}

impl Documents {
    /// The documents, in order.
    fn read(self) -> Result<Vec<Document>, AdminError> {
        Ok(match self {
            Self::One(document) => vec![Document {
                line: 1,
                text: document,
            }],
            Self::Samples(count) => (0..count)
                .map(|n| Document {
                    line: n + 1,
                    text: serde_json::json!({ "n": n, "user_id": format!("user-{}", n % 100), "action": "sample" })
                        .to_string(),
                })
                .collect(),
            Self::Stdin => lines(std::io::stdin().lock())?,
        })
    }
}

/// The non-blank lines of `input`, each with its line number.
fn lines(input: impl BufRead) -> Result<Vec<Document>, AdminError> {
    let mut documents = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let text = line?;
        if !text.trim().is_empty() {
            documents.push(Document {
                line: index + 1,
                text,
            });
        }
    }
    Ok(documents)
}

/// What `send` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Entries added.
    pub count: usize,
    /// To this stream.
    pub stream: String,
}

impl fmt::Display for Sent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "added {} entries to {}", self.count, self.stream)
    }
}

impl Admin {
    /// Reads `documents` and sends them, with a progress bar on the terminal
    /// when there are many.
    pub async fn send_documents(&mut self, documents: Documents) -> Result<Sent, AdminError> {
        let documents = documents.read()?;
        let bar = ProgressBar::new(documents.len() as u64);
        if documents.len() < PROGRESS_FROM {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        let count = self
            .send(&documents, |sent| bar.set_position(sent as u64))
            .await?;
        bar.finish_and_clear();
        Ok(Sent {
            count,
            stream: self.stream.clone(),
        })
    }

    /// Adds one entry per document (a `data` field holding it), pipelined;
    /// every document is checked to be JSON before anything is sent.
    /// `progress` hears how many were added so far.
    pub async fn send(
        &mut self,
        documents: &[Document],
        mut progress: impl FnMut(usize),
    ) -> Result<usize, AdminError> {
        for document in documents {
            if let Err(source) = serde_json::from_str::<serde_json::Value>(&document.text) {
                return Err(AdminError::NotJson {
                    line: document.line,
                    source,
                });
            }
        }
        let mut sent = 0;
        for chunk in documents.chunks(SEND_CHUNK) {
            let mut pipe = redis::pipe();
            for document in chunk {
                pipe.cmd("XADD")
                    .arg(&self.stream)
                    .arg("*")
                    .arg("data")
                    .arg(&document.text);
                for (name, value) in &self.trace_fields {
                    pipe.arg(name).arg(value);
                }
                pipe.ignore();
            }
            pipe.query_async::<()>(&mut self.connection).await?;
            sent += chunk.len();
            progress(sent);
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_lines_keep_the_line_numbers_true() {
        let input = "{\"a\":1}\n\n   \n{\"b\":2}\n";
        let documents = lines(input.as_bytes()).unwrap();
        let numbered: Vec<(usize, &str)> = documents
            .iter()
            .map(|document| (document.line, document.text.as_str()))
            .collect();
        assert_eq!(numbered, [(1, "{\"a\":1}"), (4, "{\"b\":2}")]);
    }
}
