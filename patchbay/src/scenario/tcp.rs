//! TCP scenarios: SYN and data blackholes, keepalive, FIN-WAIT-2 timeout.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::trace::{Recorder, Trace, on_port};
use super::{
    LabCtx, ScenarioError, Size, budget, errno_name, io_err, pair, scenario_lab, settle, unexpected,
};
use crate::{native::Device, Direction, native::Lab};

const PORT: u16 = 7100;
/// `TCP_FIN_WAIT2` in `include/net/tcp_states.h` (also the substate a
/// timewait socket reports to sock_diag).
const TCP_FIN_WAIT2: u8 = 5;

/// What the server side of a connection does with accepted connections.
#[derive(Clone, Copy)]
enum Server {
    /// Echo until EOF.
    Echo,
    /// Echo once, then hold the connection open forever without reading or
    /// closing (the peer of a half-closed connection).
    Hold,
}

async fn start_server(
    s: &Device,
    ip: Ipv4Addr,
    mode: Server,
    sc: &'static str,
) -> Result<(), ScenarioError> {
    let l = s
        .spawn(move |_| async move { std::net::TcpListener::bind((ip, PORT)) })
        .lab(sc, "starting the server")?
        .await
        .lab(sc, "starting the server")?
        .map_err(|e| io_err(sc, "binding the server", e))?;
    s.spawn(move |_| async move {
        l.set_nonblocking(true)?;
        let l = tokio::net::TcpListener::from_std(l)?;
        let mut held = vec![];
        loop {
            let (mut st, _) = l.accept().await?;
            match mode {
                Server::Echo => {
                    tokio::task::spawn_local(async move {
                        let mut b = [0u8; 256];
                        while let Ok(n) = st.read(&mut b).await {
                            if n == 0 || st.write_all(&b[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
                Server::Hold => {
                    let mut b = [0u8; 1];
                    if st.read_exact(&mut b).await.is_ok() {
                        st.write_all(&b).await?;
                    }
                    held.push(st);
                }
            }
        }
        #[allow(unreachable_code)]
        Ok::<_, std::io::Error>(())
    })
    .lab(sc, "starting the server")?;
    Ok(())
}

/// An outcome observed by the client: when, and the error (or `Ok` when the
/// operation unexpectedly succeeded).
type Outcome = (Instant, std::io::Result<()>);

/// Runs `f` in node `c` with a wall-clock budget; a run out of budget gives
/// `None`.
async fn in_node<F, Fut>(
    c: &Device,
    sc: &'static str,
    limit: Duration,
    f: F,
) -> Result<Option<Outcome>, ScenarioError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Outcome> + 'static,
{
    let task = c
        .spawn(move |_| async move { tokio::time::timeout(limit, f()).await.ok() })
        .lab(sc, "running the client")?;
    task.await.lab(sc, "running the client")
}

fn record_outcome(
    rec: &Recorder,
    sc: &'static str,
    what: &str,
    out: Option<Outcome>,
) -> Result<(), ScenarioError> {
    match out {
        None => rec.observe(
            "c",
            "timeout",
            format!("{what}: no outcome within the scenario budget"),
        ),
        Some((at, Err(e))) => rec.observe_at(
            at,
            "c",
            &format!("{what}:{}", errno_name(&e)),
            e.to_string(),
        ),
        Some((_, Ok(()))) => {
            return Err(unexpected(
                sc,
                format!("{what} succeeded although the peer is blackholed"),
            ));
        }
    }
    Ok(())
}

async fn finish(lab: &Lab, rec: &Recorder) -> Trace {
    settle().await;
    rec.finish(&lab.tcp_events(), |e| on_port(e, PORT))
}

/// `syn-blackhole`: connect() to a peer whose inbound packets are dropped.
pub(crate) async fn syn_blackhole(k: f64, size: Size) -> Result<Trace, ScenarioError> {
    const SC: &str = "syn-blackhole";
    let (retries, expect_s) = match size {
        Size::Default => (2, 11.3),
        Size::Realistic => (6, 131.5),
    };
    let lab = scenario_lab(SC, k, |o| o.tcp_syn_retries(retries)).await?;
    let (c, s, ip) = pair(&lab, SC).await?;
    // An IP-level partition, not an interface blackhole: ARP keeps
    // working, so the neighbour entry (whose reachable time is random) can
    // never fail and turn the timeout into EHOSTUNREACH on long runs.
    let _fault = lab
        .partition(&c, &s)
        .await
        .lab(SC, "partitioning c from s")?;
    let rec = Recorder::new(SC, lab.clock());
    let out = in_node(&c, SC, budget(k, expect_s), move || async move {
        let r = tokio::net::TcpStream::connect((ip, PORT)).await;
        (Instant::now(), r.map(drop))
    })
    .await?;
    record_outcome(&rec, SC, "connect", out)?;
    Ok(finish(&lab, &rec).await)
}

/// A connected client from [`established`], waiting for `go`.
struct Client {
    /// Lets the client run its `then` step.
    go: oneshot::Sender<()>,
    /// The client; ends with `then`'s outcome (`None`: past the limit).
    task: crate::Task<Option<Outcome>>,
    /// When the client started `then`, in its own task: the moment it
    /// triggers the scenario's fault itself (its write, its close). A start
    /// mark taken there keeps the hand-off from the scenario to the client's
    /// worker thread out of the trace, where k would multiply it.
    started: Arc<std::sync::OnceLock<Instant>>,
}

/// Connects from `c`, proves the path with one echo, and returns once the
/// connection is established; the client then waits for `go` and runs
/// `then` on the stream.
async fn established<F, Fut>(
    c: &Device,
    ip: Ipv4Addr,
    sc: &'static str,
    limit: Duration,
    setup: impl FnOnce(&tokio::net::TcpStream) -> std::io::Result<()> + Send + 'static,
    then: F,
) -> Result<Client, ScenarioError>
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Outcome> + 'static,
{
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Arc::new(std::sync::OnceLock::new());
    let started_in = started.clone();
    let task = c
        .spawn(move |_| async move {
            let mut st = match tokio::net::TcpStream::connect(SocketAddr::from((ip, PORT))).await {
                Ok(s) => s,
                Err(e) => return Some((Instant::now(), Err(e))),
            };
            if let Err(e) = setup(&st) {
                return Some((Instant::now(), Err(e)));
            }
            let mut b = [0u8; 1];
            if let Err(e) = async {
                st.write_all(b"h").await?;
                st.read_exact(&mut b).await
            }
            .await
            {
                return Some((Instant::now(), Err(e)));
            }
            if ready_tx.send(()).is_err() || go_rx.await.is_err() {
                return None;
            }
            let _ = started_in.set(Instant::now());
            tokio::time::timeout(limit, then(st)).await.ok()
        })
        .lab(sc, "running the client")?;
    if ready_rx.recv().await.is_none() {
        let out = task.await.lab(sc, "connecting")?;
        return Err(unexpected(
            sc,
            format!("could not establish the connection: {:?}", out.map(|o| o.1)),
        ));
    }
    Ok(Client {
        go: go_tx,
        task,
        started,
    })
}

/// `data-blackhole`: the peer goes silent, the client writes and waits.
pub(crate) async fn data_blackhole(k: f64, size: Size) -> Result<Trace, ScenarioError> {
    const SC: &str = "data-blackhole";
    let (retries2, expect_s) = match size {
        Size::Default => (5, 13.4),
        Size::Realistic => (8, 102.6),
    };
    let lab = scenario_lab(SC, k, |o| o.tcp_retries2(retries2)).await?;
    let (c, s, ip) = pair(&lab, SC).await?;
    start_server(&s, ip, Server::Echo, SC).await?;
    let client = established(
        &c,
        ip,
        SC,
        budget(k, expect_s),
        |_| Ok(()),
        |mut st| async move {
            let r = async {
                st.write_all(b"x").await?;
                let mut b = [0u8; 1];
                match st.read(&mut b).await? {
                    0 => Err(std::io::Error::other("EOF")),
                    _ => Ok(()),
                }
            }
            .await;
            (Instant::now(), r)
        },
    )
    .await?;
    // IP-level partition (ARP keeps working): see `syn_blackhole`.
    let _fault = lab
        .partition(&c, &s)
        .await
        .lab(SC, "partitioning c from s")?;
    let mut rec = Recorder::new(SC, lab.clock());
    let _ = client.go.send(()); // the receiver lives in the task awaited next
    let out = client.task.await.lab(SC, "writing")?;
    // The start mark is the write itself: the kernel arms the loss probe
    // there, and at k = 10 a millisecond of hand-off before it would be
    // 10 ms of virtual error on the first retransmissions.
    if let Some(&t0) = client.started.get() {
        rec.restart_at(t0);
    }
    record_outcome(&rec, SC, "write", out)?;
    Ok(finish(&lab, &rec).await)
}

fn set_keepalive(
    st: &tokio::net::TcpStream,
    idle: u32,
    intvl: u32,
    cnt: u32,
) -> std::io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    let e = |e: nix::Error| std::io::Error::from_raw_os_error(e as i32);
    setsockopt(st, sockopt::KeepAlive, &true).map_err(e)?;
    setsockopt(st, sockopt::TcpKeepIdle, &idle).map_err(e)?;
    setsockopt(st, sockopt::TcpKeepInterval, &intvl).map_err(e)?;
    setsockopt(st, sockopt::TcpKeepCount, &cnt).map_err(e)
}

/// `keepalive-dead-peer`: an idle connection with app keepalive; the peer
/// vanishes right after the last exchange.
pub(crate) async fn keepalive_dead_peer(k: f64, size: Size) -> Result<Trace, ScenarioError> {
    const SC: &str = "keepalive-dead-peer";
    // (idle, interval, count) in seconds, as the application sets them.
    let ((idle, intvl, cnt), expect_s) = match size {
        Size::Default => ((10, 10, 1), 20.0),
        Size::Realistic => ((60, 20, 3), 120.0),
    };
    let lab = scenario_lab(SC, k, |o| o).await?;
    let (c, s, ip) = pair(&lab, SC).await?;
    start_server(&s, ip, Server::Echo, SC).await?;
    // Keepalive counts idle time from the last segment received, the echo
    // that `established` waits for: the start mark is taken right after it
    // returns (microseconds later), before the peer vanishes.
    let client = established(
        &c,
        ip,
        SC,
        budget(k, expect_s),
        move |st| set_keepalive(st, idle, intvl, cnt),
        |mut st| async move {
            let mut b = [0u8; 1];
            let r = match st.read(&mut b).await {
                Ok(0) => Err(std::io::Error::other("EOF")),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            (Instant::now(), r)
        },
    )
    .await?;
    let rec = Recorder::new(SC, lab.clock());
    // IP-level partition (ARP keeps working): see `syn_blackhole`.
    let _fault = lab
        .partition(&c, &s)
        .await
        .lab(SC, "partitioning c from s")?;
    let _ = client.go.send(()); // the receiver lives in the task awaited next
    let out = client.task.await.lab(SC, "waiting for keepalive")?;
    record_outcome(&rec, SC, "read", out)?;
    Ok(finish(&lab, &rec).await)
}

/// `fin-timeout`: the client closes (FIN, ACKed), the peer never sends its
/// FIN and goes silent; the orphaned FIN-WAIT-2 socket is reclaimed after
/// `tcp_fin_timeout` (observed with sock_diag).
pub(crate) async fn fin_timeout(k: f64, _size: Size) -> Result<Trace, ScenarioError> {
    const SC: &str = "fin-timeout";
    let expect_s = 60.0;
    let lab = scenario_lab(SC, k, |o| o).await?;
    let (c, s, ip) = pair(&lab, SC).await?;
    start_server(&s, ip, Server::Hold, SC).await?;
    // The client reports when its socket reaches FIN-WAIT-2 (the peer has
    // ACKed the FIN); only then does the peer go silent, or the ACK itself
    // could be dropped and the FIN retransmitted.
    let (fw2_tx, mut fw2_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    // sock_diag is polled every 50 ms of virtual time (0.08% of the 60 s
    // timeout) while it matters: until FIN-WAIT-2, and from shortly before
    // the socket's timer is due (sock_diag reports when). In between, every
    // 500 ms (0.8%): an early reclaim still shows, far inside the error
    // budget, and a guest in virtual time (about 1 ms per poll) is not kept
    // busy by 1200 polls.
    let fine = Duration::from_secs_f64(0.05 / k).max(Duration::from_millis(1));
    let coarse = fine * 10;
    let client = established(
        &c,
        ip,
        SC,
        budget(k, expect_s),
        |_| Ok(()),
        move |st| async move {
            let port = match st.local_addr() {
                Ok(a) => a.port(),
                Err(e) => return (Instant::now(), Err(e)),
            };
            drop(st); // close(): FIN, the peer ACKs, FIN-WAIT-2, orphaned
            let mut seen = false;
            let mut due: Option<Instant> = None;
            loop {
                match crate::sys::sockdiag::tcp_state_of_port(port) {
                    Ok(Some(sock)) => {
                        if sock.state == TCP_FIN_WAIT2 && !seen {
                            seen = true;
                            // The receiver may be gone after an error: then
                            // nobody waits for the signal.
                            let _ = fw2_tx.send(());
                        }
                        due = sock.timer_in.map(|t| Instant::now() + t);
                    }
                    Ok(None) if seen => {
                        return (
                            Instant::now(),
                            Err(std::io::Error::from_raw_os_error(libc::ETIMEDOUT)),
                        );
                    }
                    Ok(None) => {}
                    Err(e) => return (Instant::now(), Err(e)),
                }
                let far =
                    due.is_some_and(|d| d.saturating_duration_since(Instant::now()) > coarse * 2);
                tokio::time::sleep(if seen && far { coarse } else { fine }).await;
            }
        },
    )
    .await?;
    let mut rec = Recorder::new(SC, lab.clock());
    let _ = client.go.send(()); // the receiver lives in the task awaited next
    let reached = tokio::time::timeout(Duration::from_secs(5), fw2_rx.recv()).await;
    if !matches!(reached, Ok(Some(()))) {
        return Err(unexpected(SC, "the client socket never reached FIN-WAIT-2"));
    }
    let _fault = s
        .blackhole("eth0", Direction::Both)
        .await
        .lab(SC, "blackholing s")?;
    let out = client
        .task
        .await
        .lab(SC, "waiting for the FIN-WAIT-2 timeout")?;
    // The start mark is the close itself (see `data_blackhole`): its state
    // changes are then never before the mark, whatever the hand-off took.
    if let Some(&t0) = client.started.get() {
        rec.restart_at(t0);
    }
    match out {
        None => rec.observe("c", "timeout", "FIN-WAIT-2 not reclaimed within the budget"),
        Some((at, Err(e))) if e.raw_os_error() == Some(libc::ETIMEDOUT) => rec.observe_at(
            at,
            "c",
            "fin-wait-2:reclaimed",
            "socket gone from sock_diag",
        ),
        Some((_, Err(e))) => return Err(io_err(SC, "watching the FIN-WAIT-2 socket", e)),
        Some((_, Ok(()))) => {}
    }
    Ok(finish(&lab, &rec).await)
}
