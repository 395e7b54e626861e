//! `patchbay serve DIR... [--port P] [--bind ADDR] [--open]`: the devtools
//! web view of run directories.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::serve::{ServeOpts, Server};
use anyhow::Context;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Run directories: lab outdirs, `bench --out` directories, kept test
    /// outdirs (default: target/patchbay-bench).
    dirs: Vec<PathBuf>,
    /// TCP port; 0 picks a free one.
    #[arg(long, default_value_t = 8717)]
    port: u16,
    /// Address to listen on. Anything but loopback lets every host that can
    /// reach it read the served directories: ask for it only on purpose.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// Open the page in the desktop's browser (xdg-open).
    #[arg(long)]
    open: bool,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let dirs = if args.dirs.is_empty() {
        vec![PathBuf::from("target/patchbay-bench")]
    } else {
        args.dirs
    };
    let server = start(dirs, SocketAddr::new(args.bind, args.port)).await?;
    if args.open {
        open_browser(&url(server.local_addr()));
    }
    server.run().await?;
    Ok(ExitCode::SUCCESS)
}

/// Binds the server and prints where it is (the first stdout line is the
/// URL, for scripts and tests).
pub async fn start(dirs: Vec<PathBuf>, addr: SocketAddr) -> anyhow::Result<Server> {
    let server = Server::bind(ServeOpts { dirs, addr }).await?;
    let local = server.local_addr();
    if !local.ip().is_loopback() {
        eprintln!(
            "warning: serving on {local}, a non-loopback address: every host that can reach it can read the served directories"
        );
    }
    println!("{}", url(local));
    Ok(server)
}

pub fn url(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    };
    format!("http://{host}/")
}

fn open_browser(url: &str) {
    match std::process::Command::new("xdg-open").arg(url).spawn() {
        Ok(_) => {}
        Err(e) => eprintln!("cannot start xdg-open ({e}); open {url} yourself"),
    }
}

/// A run served live by `patchbay run --serve`.
pub struct Live {
    /// The served run directory; the lab writes its artifacts there.
    pub dir: PathBuf,
    url: String,
    task: tokio::task::JoinHandle<Result<(), crate::serve::ServeError>>,
}

/// Starts serving the run directory `outdir` (or a new temporary one) on
/// loopback before the lab is built, so the page follows the run.
pub async fn live(outdir: Option<PathBuf>, port: u16) -> anyhow::Result<Live> {
    let dir = match outdir {
        Some(d) => d,
        None => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            std::env::temp_dir().join(format!("patchbay-run-{}-{stamp}", std::process::id()))
        }
    };
    let created = !dir.exists();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating the run directory {}", dir.display()))?;
    let server = match start(
        vec![dir.clone()],
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            // Nothing ran: leave no empty run directory behind.
            if created && let Err(rm) = std::fs::remove_dir(&dir) {
                eprintln!("cannot remove {}: {rm}", dir.display());
            }
            return Err(e);
        }
    };
    eprintln!("serving the run directory {} live:", dir.display());
    let url = url(server.local_addr());
    Ok(Live {
        dir,
        url,
        task: tokio::spawn(server.run()),
    })
}

impl Live {
    /// After the run: keeps serving until Ctrl-C.
    pub async fn wait(self) -> anyhow::Result<()> {
        eprintln!(
            "run finished; still serving {} at {} (Ctrl-C to stop)",
            self.dir.display(),
            self.url
        );
        tokio::select! {
            r = self.task => r??,
            r = tokio::signal::ctrl_c() => r?,
        }
        Ok(())
    }
}
