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

impl Documents {
    /// The documents as text, in order.
    fn read(self) -> Result<Vec<String>, AdminError> {
        Ok(match self {
            Self::One(document) => vec![document],
            Self::Samples(count) => (0..count)
                .map(|n| {
                    serde_json::json!({ "n": n, "user_id": format!("user-{}", n % 100), "action": "sample" })
                        .to_string()
                })
                .collect(),
            Self::Stdin => std::io::stdin()
                .lock()
                .lines()
                .filter(|line| line.as_ref().map_or(true, |line| !line.trim().is_empty()))
                .collect::<Result<_, _>>()?,
        })
    }
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
        documents: &[String],
        mut progress: impl FnMut(usize),
    ) -> Result<usize, AdminError> {
        for (index, document) in documents.iter().enumerate() {
            if let Err(source) = serde_json::from_str::<serde_json::Value>(document) {
                return Err(AdminError::NotJson {
                    line: index + 1,
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
                    .arg(document)
                    .ignore();
            }
            pipe.query_async::<()>(&mut self.connection).await?;
            sent += chunk.len();
            progress(sent);
        }
        Ok(sent)
    }
}
