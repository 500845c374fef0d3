//! The worker threads that carry out fan-outs. A job is a [`Candidate`] and where to send
//! its [`Outcome`]; the worker sends the outcome back and reports nothing itself.
//!
//! Threads finish by message: dropping the sender ([`Workers::shutdown`]) lets every
//! worker finish the jobs already queued and exit; a caller waiting for a batch of
//! outcomes (a reconcile) is done when every job's reply sender has been dropped.

use crate::link::{Candidate, Outcome};
use crossbeam_channel::{Receiver, Sender};
use nix::sys::eventfd::EventFd;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Where a job's outcome goes: a channel, and optionally an eventfd to wake a thread
/// that polls descriptors (the event loop).
#[derive(Debug, Clone)]
pub struct Reply {
    tx: Sender<Outcome>,
    wake: Option<Arc<EventFd>>,
}

impl Reply {
    pub fn to(tx: Sender<Outcome>) -> Reply {
        Reply { tx, wake: None }
    }

    pub fn waking(tx: Sender<Outcome>, wake: Arc<EventFd>) -> Reply {
        Reply {
            tx,
            wake: Some(wake),
        }
    }

    fn send(&self, o: Outcome) {
        // A receiver gone (a reconcile given up at shutdown) just drops the outcome.
        if self.tx.send(o).is_ok()
            && let Some(w) = &self.wake
        {
            let _ = w.write(1);
        }
    }
}

/// One fan-out to do.
#[derive(Debug)]
pub struct Job {
    pub candidate: Candidate,
    pub reply: Reply,
}

/// The worker threads.
#[derive(Debug)]
pub struct Workers {
    tx: Sender<Job>,
    workers: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` named worker threads.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let (tx, rx): (Sender<Job>, Receiver<Job>) = crossbeam_channel::unbounded();
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let rx = rx.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("link-{i}"))
                    .spawn(move || {
                        for job in rx {
                            job.reply.send(crate::link::fan_out(job.candidate));
                        }
                    })?,
            );
        }
        Ok(Workers { tx, workers })
    }

    /// Queues a job. Never blocks (the event thread must keep draining the kernel queue).
    pub fn submit(&self, job: Job) {
        // The receivers live as long as the workers, which outlive every submit.
        let _ = self.tx.send(job);
    }

    /// A sender for another thread (a reconcile) to queue jobs with.
    pub fn sender(&self) -> Sender<Job> {
        self.tx.clone()
    }

    /// Jobs waiting for a worker.
    pub fn backlog(&self) -> usize {
        self.tx.len()
    }

    /// Finishes every queued job, then joins the workers. Returns how many panicked.
    pub fn shutdown(self) -> usize {
        drop(self.tx);
        self.workers
            .into_iter()
            .map(|w| w.join())
            .filter(Result::is_err)
            .count()
    }
}
