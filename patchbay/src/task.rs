//! Handles of work spawned on a node: [`Task`] (an async closure on the
//! node's runtime) and [`ThreadTask`] (a blocking thread in its namespace).
//! They wrap the kernel layer's worker handles and turn its errors into
//! [`TaskError`], so no kernel-layer type shows in their signatures.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::kernel_error::KernelError;
use crate::sys::netns::{self, NetnsError};

/// Why awaiting a [`Task`] or [`ThreadTask`] gave no value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task was cancelled through [`Task::abort`] (or by dropping a
    /// handle made with [`Task::abort_on_drop`]).
    #[error("the task on {node} was aborted")]
    Aborted {
        /// The node (namespace) it ran on.
        node: String,
    },
    /// The node's worker is gone: its lab was dropped, or a task on it
    /// panicked.
    #[error("node {node} is gone (its lab was dropped, or a task on it panicked)")]
    Gone {
        /// The node (namespace).
        node: String,
    },
    /// A thread started with `spawn_thread` panicked.
    #[error("a thread in {node} panicked: {message}")]
    Panicked {
        /// The node (namespace).
        node: String,
        /// The panic message.
        message: String,
    },
    /// The thread could not enter the node's namespace.
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

impl From<NetnsError> for TaskError {
    fn from(e: NetnsError) -> Self {
        match e {
            NetnsError::Aborted { name } => TaskError::Aborted { node: name },
            NetnsError::Gone { name } => TaskError::Gone { node: name },
            NetnsError::Panicked { name, message } => TaskError::Panicked {
                node: name,
                message,
            },
            other => TaskError::Kernel(other.into()),
        }
    }
}

/// A task running on a node's worker (from `spawn`): a future resolving to
/// the task's output. Dropping it detaches the task (it keeps running until
/// it ends or the lab is dropped) unless [`Task::abort_on_drop`] was chosen;
/// [`Task::abort`] cancels it at its next `.await`.
#[derive(Debug)]
pub struct Task<T>(netns::Task<T>);

impl<T> Task<T> {
    /// Cancels the task: its future is dropped at its next suspension
    /// point, on the worker. Awaiting the handle then gives
    /// [`TaskError::Aborted`].
    pub fn abort(&self) {
        self.0.abort();
    }

    /// Makes dropping this handle abort the task (default: detach).
    pub fn abort_on_drop(self) -> Self {
        Task(self.0.abort_on_drop())
    }

    /// Drops the handle and lets the task run on (the default on drop,
    /// stated explicitly).
    pub fn detach(self) {
        self.0.detach();
    }
}

impl<T> From<netns::Task<T>> for Task<T> {
    fn from(t: netns::Task<T>) -> Self {
        Task(t)
    }
}

impl<T> Future for Task<T> {
    type Output = Result<T, TaskError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.map_err(Into::into))
    }
}

/// A thread started in a node's namespace with `spawn_thread`: await it,
/// or [`ThreadTask::join`] it from blocking code.
#[derive(Debug)]
pub struct ThreadTask<T>(netns::ThreadTask<T>);

impl<T> ThreadTask<T> {
    /// Blocks until the thread ends and returns its result. Must not be
    /// called from inside an async runtime (use `.await` there).
    pub fn join(self) -> Result<T, TaskError> {
        self.0.join().map_err(Into::into)
    }
}

impl<T> From<netns::ThreadTask<T>> for ThreadTask<T> {
    fn from(t: netns::ThreadTask<T>) -> Self {
        ThreadTask(t)
    }
}

impl<T> Future for ThreadTask<T> {
    type Output = Result<T, TaskError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.map_err(Into::into))
    }
}
