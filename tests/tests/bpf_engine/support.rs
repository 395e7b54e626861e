//! Helpers of the bpf_engine tests: namespaces, black holes, sockets and log capture.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use patchbay::bpf::{Engine, EventKind, NetnsConfig, TcpEvent, netns_cookie_of_current_thread};
use patchbay_tests::{ip_here, require_root, skip};

/// The engine, or None after printing the skip line when this host cannot run it at all.
/// Any other failure (verifier, attach, ...) fails the test.
pub(crate) fn engine_or_skip() -> Result<Option<Arc<Engine>>> {
    require_root!();
    if patchbay::doctor::cgroup2_mount().is_none() {
        skip("no cgroup2 mount: the eBPF engine attaches to a cgroup v2");
        return Ok(None);
    }
    if !patchbay::bpf::probe().netns_cookie_in_sock_ops {
        skip(
            "no bpf_get_netns_cookie in sock_ops (Linux 5.15+): the engine cannot scope itself to namespaces",
        );
        return Ok(None);
    }
    Ok(Some(Engine::get().context("creating the eBPF engine")?))
}

/// Runs `f` on a new thread inside a fresh network namespace with `lo` up.
pub(crate) fn in_new_netns<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    std::thread::spawn(move || {
        // SAFETY: unshare affects only this helper thread.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            bail!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        }
        ip_here(&["link", "set", "lo", "up"])?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("netns thread panicked"))?
}

/// Writes a sysctl of the calling thread's network namespace.
pub(crate) fn sysctl(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).with_context(|| format!("writing {value} to {path}"))
}

/// Makes 10.99.0.2 a black hole: a veth pair inside this namespace, a permanent neighbour entry
/// for 10.99.0.2 on one end, and no address on the other, so SYNs leave and are never answered.
pub(crate) fn blackhole() -> Result<SocketAddr> {
    ip_here(&["link", "add", "bh0", "type", "veth", "peer", "name", "bh1"])?;
    ip_here(&["addr", "add", "10.99.0.1/24", "dev", "bh0"])?;
    ip_here(&["link", "set", "bh0", "up"])?;
    ip_here(&["link", "set", "bh1", "up"])?;
    let neigh = ["neigh", "add", "10.99.0.2", "lladdr", "02:00:00:00:99:02"];
    ip_here(&[&neigh[..], &["dev", "bh0", "nud", "permanent"]].concat())?;
    Ok(SocketAddr::from((Ipv4Addr::new(10, 99, 0, 2), 9)))
}

/// The kernel's HZ, measured from /proc/timer_list (jiffies against nanoseconds).
pub(crate) fn kernel_hz() -> Result<f64> {
    fn sample() -> Result<(f64, f64)> {
        let text =
            std::fs::read_to_string("/proc/timer_list").context("reading /proc/timer_list")?;
        let field = |prefix: &str, suffix: &str| -> Result<f64> {
            let line = text
                .lines()
                .find_map(|l| l.trim().strip_prefix(prefix))
                .with_context(|| format!("no `{prefix}` in /proc/timer_list"))?;
            Ok(line.trim().trim_end_matches(suffix).trim().parse()?)
        };
        Ok((field("now at", "nsecs")?, field("jiffies:", "")?))
    }
    let (n0, j0) = sample()?;
    std::thread::sleep(Duration::from_millis(400));
    let (n1, j1) = sample()?;
    let hz = (j1 - j0) / ((n1 - n0) / 1e9);
    // Round to the nearest common value (100, 250, 300, 1000).
    let nearest = [100.0, 250.0, 300.0, 1000.0]
        .into_iter()
        .min_by(|a: &f64, b: &f64| (a - hz).abs().total_cmp(&(b - hz).abs()))
        .unwrap_or(hz);
    Ok(nearest)
}

pub(crate) fn read_sysctl(key: &str) -> Result<Option<u64>> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    match std::fs::read_to_string(&path) {
        Ok(v) => Ok(Some(
            v.trim()
                .parse()
                .with_context(|| format!("parsing {path}"))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {path}")),
    }
}

pub(crate) struct SynRun {
    pub(crate) elapsed: Duration,
    pub(crate) events: Vec<TcpEvent>,
    pub(crate) cookie: u64,
}

/// In a fresh namespace: blackhole, `tcp_syn_retries=2`, no linear SYN timeouts; optionally
/// register with `cfg`; connect and time the failure.
pub(crate) fn syn_to_blackhole(engine: Arc<Engine>, cfg: Option<NetnsConfig>) -> Result<SynRun> {
    in_new_netns(move || {
        let target = blackhole()?;
        sysctl("net.ipv4.tcp_syn_retries", "2")?;
        if read_sysctl("net.ipv4.tcp_syn_linear_timeouts")?.is_some() {
            sysctl("net.ipv4.tcp_syn_linear_timeouts", "0")?;
        }
        let cookie = netns_cookie_of_current_thread()?;
        let events = engine.subscribe(cookie);
        let _reg = cfg.map(|c| engine.register(cookie, c)).transpose()?;
        let start = Instant::now();
        let result = TcpStream::connect(target);
        let elapsed = start.elapsed();
        match result {
            Ok(_) => bail!("connect to the black hole {target} succeeded"),
            Err(e) => ensure!(
                e.kind() == std::io::ErrorKind::TimedOut,
                "connect to {target} failed with {e}, expected a timeout"
            ),
        }
        let events = events.collect_until_quiet(Duration::from_millis(300));
        Ok(SynRun {
            elapsed,
            events,
            cookie,
        })
    })
}

pub(crate) fn count(events: &[TcpEvent], f: impl Fn(&EventKind) -> bool) -> usize {
    events.iter().filter(|e| f(&e.kind)).count()
}

pub(crate) fn getsockopt_int(fd: &impl AsRawFd, level: i32, name: i32) -> Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v/len are valid storage of the advertised size.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_mut(&mut v).cast(),
            &mut len,
        )
    };
    ensure!(
        r == 0,
        "getsockopt({name}): {}",
        std::io::Error::last_os_error()
    );
    Ok(v)
}

pub(crate) fn setsockopt_int(fd: &impl AsRawFd, level: i32, name: i32, v: i32) -> Result<()> {
    let len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v is a valid c_int.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&v).cast(),
            len,
        )
    };
    ensure!(
        r == 0,
        "setsockopt({name}, {v}): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// A TCP socket (not yet connected) in the calling thread's namespace.
pub(crate) fn tcp_socket() -> Result<std::os::fd::OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fresh descriptor, owned by nobody else.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// Connects an IPv4 TCP socket made by [`tcp_socket`] (blocking).
pub(crate) fn connect_fd(fd: &std::os::fd::OwnedFd, addr: SocketAddr) -> Result<()> {
    let SocketAddr::V4(v4) = addr else {
        bail!("connect_fd takes an IPv4 address, not {addr}");
    };
    // SAFETY: sockaddr_in is plain data; all-zero is valid.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_port = v4.port().to_be();
    sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: sin is a valid sockaddr_in of length len.
    let r = unsafe { libc::connect(fd.as_raw_fd(), std::ptr::from_ref(&sin).cast(), len) };
    ensure!(
        r == 0,
        "connect {addr}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Sets the app timers before connecting, connects over loopback and returns
/// (user timeout, keepidle, keepintvl, syncnt) read back on the client, and the user timeout of
/// the accepted socket.
pub(crate) fn app_timers_over_loopback() -> Result<([i32; 4], i32)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let fd = tcp_socket()?;
    setsockopt_int(&fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 30_000)?;
    setsockopt_int(&fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 30)?;
    setsockopt_int(&fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 75)?;
    setsockopt_int(&fd, libc::IPPROTO_TCP, libc::TCP_SYNCNT, 3)?;
    connect_fd(&fd, addr)?;
    let (server, _) = listener.accept()?;
    let tcp = libc::IPPROTO_TCP;
    let client = [
        getsockopt_int(&fd, tcp, libc::TCP_USER_TIMEOUT)?,
        getsockopt_int(&fd, tcp, libc::TCP_KEEPIDLE)?,
        getsockopt_int(&fd, tcp, libc::TCP_KEEPINTVL)?,
        getsockopt_int(&fd, tcp, libc::TCP_SYNCNT)?,
    ];
    Ok((
        client,
        getsockopt_int(&server, tcp, libc::TCP_USER_TIMEOUT)?,
    ))
}

/// Thread id of the caller (`ip link set DEV netns TID` moves a device into its namespace).
pub(crate) fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// The peer's address in `with_blackholable_peer`.
pub(crate) const PEER: &str = "10.98.0.2:7000";

/// Runs `client` in a fresh namespace joined over a veth pair to a peer namespace that listens
/// on [`PEER`] and holds every accepted connection open until `client` returns. `client` gets a
/// function that black-holes the peer (the client's neighbour entry for it then points to a MAC
/// nobody has), so data sent afterwards is retransmitted until the kernel gives up.
pub(crate) fn with_blackholable_peer<T: Send + 'static>(
    client: impl FnOnce(&dyn Fn() -> Result<()>) -> Result<T> + Send + 'static,
) -> Result<T> {
    use std::sync::mpsc;
    let (tid_tx, tid_rx) = mpsc::channel::<i32>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let peer = std::thread::spawn(move || -> Result<()> {
        in_new_netns(move || {
            tid_tx.send(gettid())?;
            go_rx.recv()?;
            ip_here(&["addr", "add", "10.98.0.2/24", "dev", "bh1"])?;
            ip_here(&["link", "set", "bh1", "up"])?;
            let listener = TcpListener::bind(PEER)?;
            listener.set_nonblocking(true)?;
            ready_tx.send(())?;
            // Accept connections and keep them open until the client is done (or gone).
            let mut conns = Vec::new();
            loop {
                match listener.accept() {
                    Ok(c) => conns.push(c),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e.into()),
                }
                match done_rx.recv_timeout(Duration::from_millis(20)) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            Ok(())
        })
    });
    let result = in_new_netns(move || {
        let tid = tid_rx.recv()?;
        ip_here(&["link", "add", "bh0", "type", "veth", "peer", "name", "bh1"])?;
        ip_here(&["link", "set", "bh1", "netns", &tid.to_string()])?;
        ip_here(&["addr", "add", "10.98.0.1/24", "dev", "bh0"])?;
        ip_here(&["link", "set", "bh0", "up"])?;
        go_tx.send(())?;
        ready_rx.recv()?;
        let blackhole = || {
            let bogus = [
                "neigh",
                "replace",
                "10.98.0.2",
                "lladdr",
                "02:00:00:00:98:99",
            ];
            ip_here(&[&bogus[..], &["dev", "bh0", "nud", "permanent"]].concat()).map(drop)
        };
        client(&blackhole)
    });
    done_tx.send(()).ok();
    peer.join()
        .map_err(|_| anyhow::anyhow!("peer panicked"))??;
    result
}

/// What [`established_then_blackhole`] saw.
pub(crate) struct Blackholed {
    /// From the write into the black hole until the kernel gave up (ETIMEDOUT).
    pub(crate) elapsed: Duration,
    /// The socket's retransmission timeout when the black hole began (`tcpi_rto`).
    pub(crate) rto: Duration,
}

impl Blackholed {
    /// The latest the kernel may give up without a user timeout, for this socket's RTO `r`.
    /// Its model deadline for `tcp_retries2=3` is 3 s (15 × the 200 ms minimum), checked only
    /// when the retransmission timer fires and counted from the first retransmission. After
    /// the tail loss probe (at most `r`), the timer fires at `2r, 4r, 8r, ...`, so the kernel
    /// gives up at the first `r·2^j` with `r·(2^j − 2) ≥ 3 s`. Measured on 6.18: `r` = 204 ms,
    /// given up after 6.72–6.78 s (`32r` plus the probe). A quarter more, and half a second,
    /// for a loaded host; a slow first RTT sample raises `r` and the deadline with it.
    pub(crate) fn latest_default_giveup(&self) -> Duration {
        let r = self.rto.max(Duration::from_millis(200));
        let mut j = 2u32;
        while r * (2u32.pow(j) - 2) < Duration::from_secs(3) {
            j += 1;
        }
        (r * 2u32.pow(j) + r).mul_f64(1.25) + Duration::from_millis(500)
    }
}

/// The socket's retransmission timeout (`TCP_INFO`'s `tcpi_rto`).
fn tcp_rto(s: &TcpStream) -> Result<Duration> {
    // SAFETY: tcp_info is plain old data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the fd is open for the call; the kernel writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    ensure!(
        rc == 0,
        "getsockopt(TCP_INFO): {}",
        std::io::Error::last_os_error()
    );
    Ok(Duration::from_micros(info.tcpi_rto.into()))
}

/// An established connection from a fresh namespace to a peer namespace over a veth pair, then
/// a black hole, then a write: returns how long until the kernel gives up (ETIMEDOUT), with
/// the socket's RTO when the black hole began. `tcp_retries2=3` in the client namespace: the
/// kernel's model deadline is 200 ms * (1 + 2 + 4 + 8) = 3 s.
pub(crate) fn established_then_blackhole(
    engine: Arc<Engine>,
    cfg: Option<NetnsConfig>,
) -> Result<Blackholed> {
    use std::io::{Read, Write};
    with_blackholable_peer(move |blackhole| {
        sysctl("net.ipv4.tcp_retries2", "3")?;
        let cookie = netns_cookie_of_current_thread()?;
        let _reg = cfg.map(|c| engine.register(cookie, c)).transpose()?;
        let mut s = TcpStream::connect(PEER)?;
        s.write_all(b"hello")?;
        std::thread::sleep(Duration::from_millis(200));
        blackhole()?;
        let rto = tcp_rto(&s)?;
        let start = Instant::now();
        s.write_all(b"into the void")?;
        let mut buf = [0u8; 16];
        let err = match s.read(&mut buf) {
            Ok(n) => bail!("read {n} bytes from a black-holed peer"),
            Err(e) => e,
        };
        let elapsed = start.elapsed();
        ensure!(
            err.kind() == std::io::ErrorKind::TimedOut,
            "connection failed with {err}, expected a timeout"
        );
        Ok(Blackholed { elapsed, rto })
    })
}

/// eBPF log records forwarded to `tracing` (target `patchbay::bpf`): (level, message).
pub(crate) type Records = Arc<std::sync::Mutex<Vec<(tracing::Level, String)>>>;

pub(crate) struct Capture(Records);

pub(crate) struct Message<'a>(&'a mut String);

impl tracing::field::Visit for Message<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            use std::fmt::Write;
            let _ = write!(self.0, "{value:?}"); // writing to a String cannot fail
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "patchbay::bpf" {
            return;
        }
        let mut msg = String::new();
        event.record(&mut Message(&mut msg));
        let level = *event.metadata().level();
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((level, msg));
    }
}

/// The records captured by the process-wide subscriber (installed on first use).
pub(crate) fn capture() -> Result<Records> {
    use tracing_subscriber::layer::SubscriberExt;
    static RECORDS: std::sync::OnceLock<Records> = std::sync::OnceLock::new();
    if let Some(r) = RECORDS.get() {
        return Ok(Arc::clone(r));
    }
    let records = Records::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(Capture(Arc::clone(&records))),
    )
    .context("installing the capturing tracing subscriber")?;
    Ok(Arc::clone(RECORDS.get_or_init(|| records)))
}

/// Waits up to 3 s until a record contains every one of `wanted`; returns the records.
pub(crate) fn wait_for_records(
    records: &Records,
    wanted: &[String],
) -> Vec<(tracing::Level, String)> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let got = records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let all = wanted
            .iter()
            .all(|w| got.iter().any(|(_, m)| m.contains(w.as_str())));
        if all || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The namespace config of the application-timer tests: scale 20 and a 777 ms give-up
/// deadline.
pub(crate) fn app_scaling_cfg() -> NetnsConfig {
    NetnsConfig {
        flags: patchbay::bpf::FLAG_SCALE_SOCKOPTS,
        scale_milli: 20_000,
        user_timeout_ms: 777,
        ..NetnsConfig::default()
    }
}
