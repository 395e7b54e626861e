//! Builds a lab from a [`LabFile`] and executes its steps.

use std::time::Instant;

use serde::Serialize;

use super::exec::{State, StepOutcome, run_step};
use super::schema::LabFile;
use super::step::StepKind;
use super::subst::Vars;
use crate::{Error, InvalidReason, LabOpts, Result, native::Lab};

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The lab's id.
    pub lab: String,
    /// The lab's time scale k.
    pub time_scale: f64,
    /// Seconds to build the lab.
    pub build_s: f64,
    /// Every executed step; the run stops at the first failed one.
    pub steps: Vec<StepOutcome>,
    /// Whether every step passed.
    pub ok: bool,
}

/// Overrides of a lab file's settings from the command line.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RunOverrides {
    /// Replaces `[lab] time-scale`.
    pub time_scale: Option<crate::compress::TimeScale>,
    /// Forces virtual time.
    pub virtual_time: bool,
    /// Replaces `[lab] outdir`; a directory given here is always kept.
    pub outdir: Option<std::path::PathBuf>,
}

/// The lab's time mode from `[lab] time` and `time-scale` and the overrides.
fn time_mode(file: &LabFile, o: &RunOverrides) -> Result<crate::TimeMode> {
    let l = &file.lab;
    let k = match o.time_scale {
        Some(k) => Some(k),
        None => l
            .time_scale
            .map(crate::compress::TimeScale::new)
            .transpose()?,
    };
    let virt = l.time == Some(super::schema::TimeMode::Virtual) || o.virtual_time;
    Ok(match (virt, k) {
        (true, Some(k)) if !k.is_real_time() => {
            return Err(Error::invalid(
                "time-scale",
                InvalidReason::Conflict,
                "virtual time and a time scale exclude each other: under virtual time every timer is already exact; drop time-scale",
            ));
        }
        (true, _) => crate::TimeMode::Virtual { seed: None },
        (false, Some(k)) => crate::TimeMode::Compressed(k),
        (false, None) => crate::TimeMode::Real,
    })
}

fn lab_opts(file: &LabFile, o: &RunOverrides) -> Result<LabOpts> {
    let l = &file.lab;
    let mut opts = LabOpts::default()
        .prewarm_neighbors(l.prewarm_neighbors)
        .time_mode(time_mode(file, o)?)
        .sysctl_only(l.sysctl_only);
    if let Some(label) = &l.label {
        opts = opts.label(label.clone());
    }
    if let Some(t) = l.telemetry {
        opts = opts.telemetry(t);
    }
    if let Some(n) = l.tcp_syn_retries {
        opts = opts.tcp_syn_retries(n);
    }
    if let Some(n) = l.tcp_retries2 {
        opts = opts.tcp_retries2(n);
    }
    match (&o.outdir, &l.outdir) {
        (Some(d), _) => opts = opts.outdir(d.clone()).keep_artifacts(true),
        (None, Some(d)) => opts = opts.outdir(d.clone()).keep_artifacts(l.keep),
        (None, None) => {}
    }
    Ok(opts)
}

async fn build(file: &LabFile, o: &RunOverrides) -> Result<Lab> {
    let lab = Lab::with_opts(lab_opts(file, o)?).await?;
    for name in file.regions.keys() {
        lab.add_region(name).await?;
    }
    for (name, r) in &file.regions {
        for (other, c) in &r.links {
            lab.link_regions_by_name(name, other, c.clone()).await?;
        }
    }
    for r in &file.routers {
        let mut b = lab.add_router(&r.name);
        if let Some(p) = r.preset {
            b = b.preset(p);
        }
        if let Some(up) = &r.upstream {
            b = b.upstream_name(up);
        }
        if let Some(region) = &r.region {
            b = b.upstream_name(&format!("region-{region}"));
        }
        if let Some(m) = r.mtu {
            b = b.mtu(m);
        }
        if r.block_icmp_frag_needed {
            b = b.block_icmp_frag_needed();
        }
        if let Some(nat) = r.nat {
            b = b.nat(nat);
        }
        if let Some(h) = r.hairpin {
            b = b.hairpin(h);
        }
        if let Some(t) = &r.conntrack {
            b = b.conntrack(t.clone());
        }
        if let Some(fw) = &r.firewall {
            b = b.firewall(fw.clone());
        }
        if let Some(ip) = r.ip_support {
            b = b.ip_support(ip);
        }
        if let Some(m) = r.nat_v6 {
            b = b.nat_v6(m);
        }
        b.build().await?;
    }
    for d in &file.devices {
        let mut b = lab.add_device(&d.name);
        for i in &d.ifaces {
            b = b.iface_on(&i.name, &i.router);
        }
        if let Some(dv) = &d.default_via {
            b = b.default_via(dv);
        }
        let dev = b.build().await?;
        if let Some(fw) = &d.firewall {
            dev.set_firewall(fw.clone()).await?;
        }
        for i in &d.ifaces {
            if let Some(c) = &i.link {
                let dir = i.link_direction.unwrap_or(crate::Direction::Both);
                dev.set_link_condition_dir(&i.name, c.clone(), dir).await?;
            }
            if let Some(m) = i.mtu {
                dev.set_mtu(&i.name, m).await?;
            }
        }
    }
    if let Some(dns) = &file.dns {
        super::dns::apply(&lab, dns).await?;
    }
    for d in &file.devices {
        if let Some(ns) = &d.nameserver {
            let dev = lab.node(&d.name).ok_or_else(|| {
                let msg = format!("unknown device {:?}", d.name);
                Error::invalid_node(&d.name, "nameserver", InvalidReason::Unknown, msg)
            })?;
            // Only addresses of families the device has: a v6-only device
            // gets the server's IPv6 address alone.
            let servers: Vec<_> = super::dns::nameservers(&lab, ns)?
                .into_iter()
                .filter(|ip| match ip {
                    std::net::IpAddr::V4(_) => dev.ip().is_some(),
                    std::net::IpAddr::V6(_) => dev.ip6().is_some(),
                })
                .collect();
            dev.set_nameservers(&servers)?;
        }
    }
    // Captures go into the output directory; without one there is nowhere
    // to put them, and the file runs as it would without `capture`.
    let captures = if lab.outdir().is_some() {
        file.lab.capture.as_slice()
    } else {
        &[]
    };
    for c in captures {
        let (node, iface) = c.split_once('.').unwrap_or((c.as_str(), ""));
        let n = lab.node(node).ok_or_else(|| {
            let msg = format!("[lab] capture {c:?}: unknown node {node:?}");
            Error::invalid_node(node, "capture", InvalidReason::Unknown, msg)
        })?;
        n.capture_until_end(iface).await?;
    }
    Ok(lab)
}

/// Builds the lab described by `file`, runs its steps, and tears it down.
/// `on_step` is called after each step (for progress output).
pub async fn run(
    file: &LabFile,
    o: RunOverrides,
    mut on_step: impl FnMut(&StepOutcome),
) -> Result<RunReport> {
    let t0 = Instant::now();
    let lab = build(file, &o).await?;
    let build_s = t0.elapsed().as_secs_f64();
    let mut vars = Vars::from_lab(&lab);
    let mut st = State::default();
    let mut steps = vec![];
    for (i, step) in file.steps.iter().enumerate() {
        lab.emit(None, "step.start", serde_json::json!({"step": i + 1}));
        let mut out = run_step(&lab, &vars, i + 1, step, &mut st).await;
        if matches!(step.kind(), Ok(StepKind::Mobility(_))) {
            // Addresses changed: `${phone.ip}` is the new one from now on.
            vars = Vars::from_lab(&lab);
        }
        out.virtual_s = out.wall_s * lab.time_scale().get();
        lab.emit(
            out.node.as_deref(),
            "step.end",
            serde_json::to_value(&out).unwrap_or_default(),
        );
        if !out.ok {
            lab.fail(format!(
                "step {} ({}) failed: {}",
                out.step,
                out.kind,
                out.error.as_deref().unwrap_or("?")
            ));
        }
        on_step(&out);
        let ok = out.ok;
        steps.push(out);
        if !ok {
            break;
        }
    }
    let ok = steps.iter().all(|s| s.ok) && steps.len() == file.steps.len();
    Ok(RunReport {
        lab: lab.id().to_string(),
        time_scale: lab.time_scale().get(),
        build_s,
        steps,
        ok,
    })
}
