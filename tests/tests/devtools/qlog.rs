//! A real qlog: a quinn client behind a NAT talks to a quinn server, both
//! writing qlog (quinn's `qlog` feature) into the lab's outdir, timed from
//! the lab clock's start; the page's qlog view shows every event of each
//! connection on the lab's virtual axis.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, ensure};
use patchbay::{native::Lab, native::LabOpts, native::Nat};
use serde_json::Value;

use super::*;

const PORT: u16 = 4433;

/// A transport config that streams qlog to `file`, timed from `start`.
fn qlog_transport(
    file: &Path,
    start: std::time::Instant,
) -> anyhow::Result<Arc<quinn::TransportConfig>> {
    let mut q = quinn::QlogConfig::default();
    q.writer(Box::new(std::fs::File::create(file)?))
        .title(Some(
            file.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        ))
        .start_time(start);
    let mut t = quinn::TransportConfig::default();
    t.qlog_stream(q.into_stream());
    Ok(Arc::new(t))
}

/// Builds the lab, runs three request/response exchanges over one
/// connection and drops the lab (keeping its outdir).
async fn quic_run(dir: &Path) -> anyhow::Result<()> {
    let lab = Lab::with_opts(
        LabOpts::default()
            .label("quic-qlog")
            .outdir(dir)
            .keep_artifacts(true),
    )
    .await?;
    let isp = lab.add_router("isp").build().await?;
    let home = lab
        .add_router("home")
        .upstream(&isp)
        .nat(Nat::Home)
        .build()
        .await?;
    let server = lab.add_device("server").iface("eth0", &isp).build().await?;
    let client = lab
        .add_device("client")
        .iface("eth0", &home)
        .build()
        .await?;
    let qdir = dir.join("qlog");
    std::fs::create_dir_all(&qdir)?;
    let start = lab.clock().start();
    let ck = rcgen::generate_simple_self_signed(vec!["server".to_string()])?;
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());
    let mut sc = quinn::ServerConfig::with_single_cert(vec![cert.clone()], key.into())?;
    sc.transport_config(qlog_transport(&qdir.join("server.sqlog"), start)?);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut cc = quinn::ClientConfig::with_root_certificates(Arc::new(roots))?;
    cc.transport_config(qlog_transport(&qdir.join("client.sqlog"), start)?);
    let ep = server
        .spawn(move |_| async move {
            quinn::Endpoint::server(sc, SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT)))
        })?
        .await??;
    let served = server.spawn(move |_| async move {
        let conn = ep.accept().await.context("endpoint closed")?.await?;
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let msg = recv.read_to_end(1 << 16).await?;
            send.write_all(&msg).await?;
            send.finish()?;
        }
        ep.wait_idle().await;
        anyhow::Ok(())
    })?;
    let sip = server.ip().context("server ip")?;
    client
        .spawn(move |_| async move {
            let mut ep = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
            ep.set_default_client_config(cc);
            let conn = ep.connect(SocketAddr::from((sip, PORT)), "server")?.await?;
            for i in 0..3 {
                let (mut send, mut recv) = conn.open_bi().await?;
                let msg = vec![b'a' + i; 3000];
                send.write_all(&msg).await?;
                send.finish()?;
                ensure!(recv.read_to_end(1 << 16).await? == msg, "echo {i}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            conn.close(0u32.into(), b"done");
            ep.wait_idle().await;
            anyhow::Ok(())
        })?
        .await??;
    served.await??;
    drop(lab);
    Ok(())
}

/// Events per connection (group_id) in a JSON-SEQ qlog file.
fn groups(file: &Path) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut out = BTreeMap::new();
    for rec in std::fs::read_to_string(file)?.split(['\u{1e}', '\n']) {
        let rec = rec.trim();
        if rec.is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(rec)?;
        if v.get("qlog_version").is_none() {
            *out.entry(v["group_id"].as_str().unwrap_or("").to_string())
                .or_insert(0) += 1;
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devtools_shows_a_quinn_qlog_per_connection() -> anyhow::Result<()> {
    let Some(chrome) = root_and_chromium()? else {
        return Ok(());
    };
    let dir = scratch("quic")?.join("run");
    quic_run(&dir).await?;
    // quinn groups a connection's events by the connection ID it knew the
    // peer by first (a client's first packets carry its random initial one).
    let mut want = BTreeMap::new();
    let mut lanes_wanted = 0;
    for side in ["client", "server"] {
        let g = groups(&dir.join(format!("qlog/{side}.sqlog")))?;
        ensure!(
            g.values().sum::<usize>() > 20,
            "{side}: the connection's events: {g:?}"
        );
        lanes_wanted += g.len();
        want.insert(side, g.into_values().sum::<usize>());
    }
    let addr = start(vec![dir.clone()], "127.0.0.1".parse()?).await?;
    let lab_end = std::fs::read_to_string(dir.join("events.jsonl"))?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["kind"] == "lab.end")
        .and_then(|e| e["virtual_ms"].as_f64())
        .context("lab.end")?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut b = browser(&chrome, "qlog")?;
        b.open(&format!("http://{addr}/#run=0&tab=qlog"), DESKTOP)?;
        let lanes = b.eval(
            "(() => { const m = {}; document.querySelectorAll('.ql-ev').forEach(e => { m[e.dataset.node] = (m[e.dataset.node] || 0) + 1; }); return m; })()",
        )?;
        let lanes = lanes.as_object().context("lanes")?;
        ensure!(lanes.len() == lanes_wanted, "a lane per connection (group): {lanes:?}");
        for (side, n) in &want {
            let drawn: u64 = lanes
                .iter()
                .filter(|(k, _)| k.starts_with(&format!("{side} ")))
                .map(|(_, v)| v.as_u64().unwrap_or(0))
                .sum();
            ensure!(drawn as usize == *n, "{side}: {drawn} of {n} events drawn");
        }
        // On the lab's axis: inside the run, before lab.end.
        let span = b.eval("(t => [Math.min(...t), Math.max(...t)])(S.qlog.data.events.map(e => e.virtual_ms))")?;
        let (first, last) = (span[0].as_f64().unwrap_or(-1.0), span[1].as_f64().unwrap_or(f64::MAX));
        ensure!(first > 0.0 && last <= lab_end, "qlog events {first}..{last} ms, lab ends at {lab_end} ms");
        println!("DEVTOOLS-QLOG: {want:?} events drawn, {first:.1}..{last:.1} ms of a run ending at {lab_end:.1} ms");
        fits_phone(&mut b, addr, 0)?;
        shoot(&mut b, &format!("http://{addr}/#run=0&tab=qlog"), "devtools-qlog")?;
        Ok(())
    })
    .await??;
    std::fs::remove_dir_all(dir.parent().context("scratch")?)?;
    Ok(())
}
