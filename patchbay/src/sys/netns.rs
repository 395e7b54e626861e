//! Network namespaces held as file descriptors, each with one worker thread.
//!
//! Every `setns`/`unshare` in patchbay happens here. A [`Netns`] owns a
//! dedicated OS thread that created its namespace with `unshare(CLONE_NEWNET)`
//! and never leaves it. The thread runs a current-thread tokio runtime with a
//! [`tokio::task::LocalSet`], so futures, sockets, netlink connections and
//! child processes started on it live in that namespace. The namespace is
//! held only by the thread and by an `O_CLOEXEC` file descriptor: when the
//! worker ends and the handle is dropped, the kernel destroys it. Nothing is
//! bind-mounted, so a killed process leaves no namespace behind.
//!
//! Requires `CAP_SYS_ADMIN` (for `unshare(CLONE_NEWNET)`), Linux 3.0+.

use std::fmt;
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::sched::CloneFlags;
use tokio::sync::{mpsc, oneshot};

/// Errors of the namespace layer.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The kernel refused to create a namespace.
    #[error(
        "cannot create network namespace for {name}: unshare(CLONE_NEWNET) failed: {source} (patchbay needs root or CAP_SYS_ADMIN)"
    )]
    Unshare {
        /// Namespace name.
        name: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// Opening `/proc/thread-self/ns/net` failed.
    #[error("cannot open the namespace file of {name}: {source}")]
    OpenNs {
        /// Namespace name.
        name: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The worker thread could not be started.
    #[error("cannot start the worker thread of {name}: {source}")]
    Thread {
        /// Namespace name.
        name: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The worker is gone: the lab was dropped or the worker panicked.
    #[error("namespace {name} is gone (its lab was dropped, or a task on it panicked)")]
    Gone {
        /// Namespace name.
        name: String,
    },
    /// The task was aborted through its handle ([`Task::abort`]).
    #[error("the task on {name} was aborted")]
    Aborted {
        /// Namespace name.
        name: String,
    },
    /// A thread started with [`Netns::spawn_thread`] panicked.
    #[error("a thread in {name} panicked: {message}")]
    Panicked {
        /// Namespace name.
        name: String,
        /// The panic message.
        message: String,
    },
    /// The worker's private mount namespace could not be set up or joined.
    #[error(transparent)]
    Mount(#[from] super::mountns::MountError),
    /// `setns` into the namespace failed (a [`Netns::spawn_thread`] thread).
    #[error("cannot enter namespace {name} with setns(CLONE_NEWNET): {source}")]
    Setns {
        /// Namespace name.
        name: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
}

type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

enum Msg {
    Job(Job),
}

struct Inner {
    name: String,
    fd: Mutex<Option<OwnedFd>>,
    /// The worker's private mount namespace (see `mountns`).
    mnt: OwnedFd,
    /// The worker's runtime, for tasks that must be `tokio` tasks (the compat layer's
    /// `JoinHandle`s).
    rt: tokio::runtime::Handle,
    tx: Mutex<Option<mpsc::UnboundedSender<Msg>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: std::thread::ThreadId,
}

/// A network namespace with its worker thread. Cheap to clone.
#[derive(Clone)]
pub struct Netns {
    inner: Arc<Inner>,
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netns")
            .field("name", &self.inner.name)
            .finish()
    }
}

thread_local! {
    static CURRENT: std::cell::Cell<Option<std::thread::ThreadId>> = const { std::cell::Cell::new(None) };
}

impl Netns {
    /// Creates a fresh network namespace with its own worker thread.
    ///
    /// `name` is used for the thread name and in error messages only; the
    /// namespace itself is anonymous.
    pub fn new(name: &str) -> Result<Self, NetnsError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        type Ready = (OwnedFd, OwnedFd, tokio::runtime::Handle);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<Ready, NetnsError>>(1);
        let tname = name.to_string();
        let thread = std::thread::Builder::new()
            .name(thread_name(name))
            .spawn(move || {
                let setup = || -> Result<(Ready, tokio::runtime::Runtime), NetnsError> {
                    nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|source| {
                        NetnsError::Unshare {
                            name: tname.clone(),
                            source,
                        }
                    })?;
                    let mnt = super::mountns::private_view(&tname)?;
                    let fd = std::fs::File::open("/proc/thread-self/ns/net").map_err(|source| {
                        NetnsError::OpenNs {
                            name: tname.clone(),
                            source,
                        }
                    })?;
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|source| NetnsError::Thread {
                            name: tname.clone(),
                            source,
                        })?;
                    let handle = rt.handle().clone();
                    Ok(((fd.into(), mnt, handle), rt))
                };
                let rt = match setup() {
                    Ok((ready, rt)) => {
                        if ready_tx.send(Ok(ready)).is_err() {
                            return;
                        }
                        rt
                    }
                    Err(e) => {
                        // The creator is waiting on the other end; if it has gone
                        // there is nobody left to tell.
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                CURRENT.with(|c| c.set(Some(std::thread::current().id())));
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    while let Some(msg) = rx.recv().await {
                        match msg {
                            Msg::Job(job) => {
                                tokio::task::spawn_local(job());
                            }
                        }
                    }
                });
                // Dropping the LocalSet and runtime cancels every task; children
                // spawned from this thread get SIGKILL through PDEATHSIG when
                // the thread exits.
            })
            .map_err(|source| NetnsError::Thread {
                name: name.to_string(),
                source,
            })?;
        let thread_id = thread.thread().id();
        let (fd, mnt, rt) = match ready_rx.recv() {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => {
                join_quietly(thread);
                return Err(e);
            }
            Err(_) => {
                join_quietly(thread);
                return Err(NetnsError::Gone {
                    name: name.to_string(),
                });
            }
        };
        Ok(Netns {
            inner: Arc::new(Inner {
                name: name.to_string(),
                fd: Mutex::new(Some(fd)),
                mnt,
                rt,
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                thread_id,
            }),
        })
    }

    /// The name given at creation.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The namespace file descriptor (`/proc/thread-self/ns/net` of the
    /// worker) as a raw number, valid until [`Netns::shutdown`].
    pub fn raw_fd(&self) -> Result<RawFd, NetnsError> {
        let g = self.inner.fd.lock().unwrap_or_else(|p| p.into_inner());
        g.as_ref()
            .map(|fd| fd.as_raw_fd())
            .ok_or_else(|| NetnsError::Gone {
                name: self.inner.name.clone(),
            })
    }

    /// The worker's tokio runtime (a current-thread runtime driven by the worker): tasks
    /// spawned on it run on the worker, inside the namespace.
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.inner.rt
    }

    /// Binds the node's name files over `/etc/hosts` and `/etc/resolv.conf` in the worker's
    /// mount namespace (see `mountns`), so in-process resolvers on the node see them.
    pub(crate) fn bind_names(
        &self,
        hosts: std::path::PathBuf,
        resolv: std::path::PathBuf,
    ) -> Result<(), NetnsError> {
        let name = self.inner.name.clone();
        self.run_sync(move || super::mountns::bind_names(&name, &hosts, &resolv))?
            .map_err(NetnsError::from)
    }

    /// Whether the calling thread is this namespace's worker.
    pub fn is_current(&self) -> bool {
        CURRENT.with(|c| c.get()) == Some(self.inner.thread_id)
    }

    fn send(&self, job: Job) -> Result<(), NetnsError> {
        let guard = self.inner.tx.lock().unwrap_or_else(|p| p.into_inner());
        let gone = || NetnsError::Gone {
            name: self.inner.name.clone(),
        };
        let tx = guard.as_ref().ok_or_else(gone)?;
        tx.send(Msg::Job(job)).map_err(|_| gone())
    }

    /// Runs a future on the worker, inside the namespace, and returns a
    /// handle to its result. The future need not be `Send`.
    pub fn spawn<F, Fut, T>(&self, f: F) -> Result<Task<T>, NetnsError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let (abort, reg) = futures::future::AbortHandle::new_pair();
        self.send(Box::new(move || {
            Box::pin(async move {
                // An aborted task drops `tx`; the handle reports `Aborted`.
                if let Ok(out) =
                    futures::future::Abortable::new(async move { f().await }, reg).await
                {
                    // The receiver may have been dropped: the caller detached.
                    let _ = tx.send(out);
                }
            })
        }))?;
        Ok(Task {
            rx,
            name: self.inner.name.clone(),
            abort,
            abort_on_drop: false,
        })
    }

    /// Runs a blocking closure on a new OS thread that has entered the
    /// namespace (`setns(CLONE_NEWNET)`); sockets and processes it creates
    /// belong to the namespace. For blocking code that must not stall the
    /// namespace's worker. Needs `CAP_SYS_ADMIN` over the namespace.
    pub fn spawn_thread<F, T>(&self, f: F) -> Result<ThreadTask<T>, NetnsError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let fd = {
            let g = self.inner.fd.lock().unwrap_or_else(|p| p.into_inner());
            let gone = || NetnsError::Gone {
                name: self.inner.name.clone(),
            };
            g.as_ref()
                .ok_or_else(gone)?
                .try_clone()
                .map_err(|source| NetnsError::OpenNs {
                    name: self.inner.name.clone(),
                    source,
                })?
        };
        let mnt = self
            .inner
            .mnt
            .try_clone()
            .map_err(|source| NetnsError::OpenNs {
                name: self.inner.name.clone(),
                source,
            })?;
        let (tx, rx) = oneshot::channel();
        let name = self.inner.name.clone();
        let tname = name.clone();
        std::thread::Builder::new()
            .name(thread_name(&format!("t-{name}")))
            .spawn(move || {
                if let Err(source) = nix::sched::setns(&fd, CloneFlags::CLONE_NEWNET) {
                    let _ = tx.send(Err(NetnsError::Setns {
                        name: tname,
                        source,
                    }));
                    return;
                }
                drop(fd);
                if let Err(e) = super::mountns::join(&tname, &mnt) {
                    let _ = tx.send(Err(e.into()));
                    return;
                }
                drop(mnt);
                let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
                    let message = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic".into());
                    NetnsError::Panicked {
                        name: tname,
                        message,
                    }
                });
                // A dropped receiver means the caller detached.
                let _ = tx.send(out);
            })
            .map_err(|source| NetnsError::Thread {
                name: name.clone(),
                source,
            })?;
        Ok(ThreadTask { rx, name })
    }

    /// Runs a closure on the worker thread, inside the namespace, and waits
    /// for its result. Runs inline when called from the worker itself.
    pub fn run_sync<F, T>(&self, f: F) -> Result<T, NetnsError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if self.is_current() {
            return Ok(f());
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.send(Box::new(move || {
            let out = f();
            // See `spawn`: a dropped receiver means the caller went away.
            let _ = tx.send(out);
            Box::pin(async {})
        }))?;
        rx.recv().map_err(|_| NetnsError::Gone {
            name: self.inner.name.clone(),
        })
    }

    /// Runs an async closure on the worker and awaits its result.
    pub async fn run<F, Fut, T>(&self, f: F) -> Result<T, NetnsError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        self.spawn(f)?.await
    }

    /// Stops the worker: cancels its tasks, kills processes it spawned
    /// (through `PR_SET_PDEATHSIG`) and waits for the thread to end. The
    /// namespace disappears once every handle is dropped.
    pub fn shutdown(&self) {
        self.begin_shutdown();
        self.join();
    }

    /// Tells the worker to stop and releases the namespace fd, without
    /// waiting: to stop many workers at once, call this on each, then
    /// [`Netns::join`] on each, so they wind down in parallel.
    pub fn begin_shutdown(&self) {
        let tx = self
            .inner
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(tx);
        let fd = self
            .inner
            .fd
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(fd);
    }

    /// Waits for the worker thread to end (after [`Netns::begin_shutdown`]);
    /// returns at once on the worker itself.
    pub fn join(&self) {
        if self.is_current() {
            return;
        }
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = thread {
            join_quietly(t);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let tx = self.tx.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        drop(tx);
        let thread = self
            .thread
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = thread
            && t.thread().id() != std::thread::current().id()
        {
            join_quietly(t);
        }
    }
}

fn join_quietly(t: JoinHandle<()>) {
    // A worker that panicked has already reported the panic on stderr; in a
    // drop path there is nothing better to do with it.
    let _ = t.join();
}

fn thread_name(name: &str) -> String {
    let mut n = format!("pb-{name}");
    n.truncate(15);
    n
}

/// A task running on a node's worker (from `spawn`): a future resolving to
/// the task's output. Dropping it detaches the task (it keeps running until
/// it ends or the lab is dropped) unless [`Task::abort_on_drop`] was chosen;
/// [`Task::abort`] cancels it at its next `.await`.
#[derive(Debug)]
pub struct Task<T> {
    rx: oneshot::Receiver<T>,
    name: String,
    abort: futures::future::AbortHandle,
    abort_on_drop: bool,
}

impl<T> Task<T> {
    /// Cancels the task: its future is dropped at its next suspension
    /// point, on the worker. Awaiting the handle then gives
    /// [`NetnsError::Aborted`].
    pub fn abort(&self) {
        self.abort.abort();
    }

    /// Makes dropping this handle abort the task (default: detach).
    pub fn abort_on_drop(mut self) -> Self {
        self.abort_on_drop = true;
        self
    }

    /// Drops the handle and lets the task run on (the default on drop,
    /// stated explicitly).
    pub fn detach(mut self) {
        self.abort_on_drop = false;
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        if self.abort_on_drop {
            self.abort.abort();
        }
    }
}

impl<T> Future for Task<T> {
    type Output = Result<T, NetnsError>;
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let aborted = self.abort.is_aborted();
        let name = self.name.clone();
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.map_err(|_| {
                if aborted {
                    NetnsError::Aborted { name }
                } else {
                    NetnsError::Gone { name }
                }
            })
        })
    }
}

/// A thread started in a namespace with [`Netns::spawn_thread`]: await it,
/// or [`ThreadTask::join`] it from blocking code.
#[derive(Debug)]
pub struct ThreadTask<T> {
    rx: oneshot::Receiver<Result<T, NetnsError>>,
    name: String,
}

impl<T> ThreadTask<T> {
    /// Blocks until the thread ends and returns its result. Must not be
    /// called from inside an async runtime (use `.await` there).
    pub fn join(self) -> Result<T, NetnsError> {
        let name = self.name;
        self.rx
            .blocking_recv()
            .map_err(|_| NetnsError::Gone { name })?
    }
}

impl<T> Future for ThreadTask<T> {
    type Output = Result<T, NetnsError>;
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let name = self.name.clone();
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.map_err(|_| NetnsError::Gone { name }).and_then(|x| x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_names_fit_the_kernel_limit() {
        assert_eq!(thread_name("a-very-long-device-name"), "pb-a-very-long-");
        assert_eq!(thread_name("r1"), "pb-r1");
    }
}
