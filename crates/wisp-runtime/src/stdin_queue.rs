//! A session's stdin: a writer thread fed through a byte-bounded queue.
//!
//! Client frames are read by one thread per connection, in order. If that thread wrote stdin
//! itself, a process that does not read its stdin would block it on a full pipe, and the
//! signal or resize frames behind the data would never be read. The queue lets the reader
//! move on; it blocks only past `CAP` bytes queued, which bounds memory.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};

use crate::session::lock;

/// Most bytes queued for one session's stdin before clients are held back.
const CAP: usize = 8 << 20;

enum Item {
    Data(Vec<u8>),
    Eof,
}

#[derive(Default)]
struct State {
    items: VecDeque<Item>,
    bytes: usize,
    /// The process stopped taking input (EOF sent, pipe broken, or session over).
    closed: bool,
}

#[derive(Default)]
pub(crate) struct StdinQueue {
    state: Mutex<State>,
    cv: Condvar,
}

impl StdinQueue {
    /// Starts the writer thread for `sink` and returns the queue feeding it.
    pub fn start(sink: File) -> Arc<StdinQueue> {
        let q = Arc::new(StdinQueue::default());
        let writer = q.clone();
        std::thread::spawn(move || writer.run(sink));
        q
    }

    /// Queues data; waits while the queue is full. Dropped when the process takes no input.
    pub fn push(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut st = lock(&self.state);
        while st.bytes > CAP && !st.closed {
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if st.closed {
            return;
        }
        st.bytes += data.len();
        st.items.push_back(Item::Data(data.to_vec()));
        self.cv.notify_all();
    }

    /// Closes the process's stdin once what is queued is written.
    pub fn eof(&self) {
        let mut st = lock(&self.state);
        if !st.closed {
            st.items.push_back(Item::Eof);
            self.cv.notify_all();
        }
    }

    /// Ends the writer thread and drops queued data (the session is over).
    pub fn close(&self) {
        let mut st = lock(&self.state);
        st.closed = true;
        st.items.clear();
        st.bytes = 0;
        self.cv.notify_all();
    }

    fn run(&self, mut sink: File) {
        loop {
            let item = {
                let mut st = lock(&self.state);
                loop {
                    if st.closed {
                        return;
                    }
                    if let Some(item) = st.items.pop_front() {
                        if let Item::Data(d) = &item {
                            st.bytes -= d.len();
                        }
                        self.cv.notify_all();
                        break item;
                    }
                    st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            };
            match item {
                Item::Data(d) => {
                    if sink.write_all(&d).is_err() {
                        self.close();
                        return;
                    }
                }
                Item::Eof => {
                    self.close();
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn delivers_in_order_then_eof() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let q = StdinQueue::start(File::from(w));
        q.push(b"hello ");
        q.push(b"world");
        q.eof();
        let mut out = String::new();
        File::from(r).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
    }

    #[test]
    fn push_does_not_block_on_a_reader_that_never_reads() {
        let (_r, w) = nix::unistd::pipe().unwrap();
        let q = StdinQueue::start(File::from(w));
        // Far more than a pipe buffer, well under the cap: returns at once.
        for _ in 0..64 {
            q.push(&[7u8; 64 * 1024]);
        }
        q.close();
    }
}
