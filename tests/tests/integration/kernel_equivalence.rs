//! Kernel equivalence: every scripted sequence (`msfilter_testbed::sequences`, IPv4 and IPv6) runs
//! once directly on plain sockets and once through the msfilter daemon, in the same
//! namespace. At every step both must give the same result (the same errno name, or both
//! refused before the kernel), and every group must end with the same filter.
//!
//! Two differences are by design. msfilter checks that the interface exists before asking
//! the kernel, so on a missing interface every step is refused with that reason instead of
//! the kernel's ENODEV (or EADDRNOTAVAIL for leave). And msfilter opens each socket for the
//! family of the group it is for, so a plain socket's "group of the other family" cannot
//! arise through it: for those sequences only the join, which must succeed, is checked.

use std::net::IpAddr;

use msfilter::{
    client::{Client, ClientError},
    daemon::protocol::{ErrorKind, FilterView},
    sockopt::{Limit, LimitGuard, Request},
};
use msfilter_testbed::{
    daemon::Daemon,
    sequences::{Bed, Filter, Interface, Sequence, SequenceOutcome, StepOutcome, table},
};
use tokio::runtime::Runtime;

fn outcome(result: Result<Option<FilterView>, ClientError>) -> StepOutcome {
    match result {
        Ok(_) => StepOutcome::Ok,
        Err(ClientError::Refused(e)) => match (e.kind, e.errno) {
            (ErrorKind::Kernel, Some(errno)) => StepOutcome::Errno(msfilter::sockopt::errno_name(
                msfilter::sockopt::errno_from_name(&errno).expect("a known errno name"),
            )),
            (ErrorKind::Invalid, _) => StepOutcome::Invalid(e.message),
            other => panic!("unexpected refusal {other:?}: {}", e.message),
        },
        Err(e) => panic!("talking to the daemon: {e}"),
    }
}

fn filter(view: Option<FilterView>) -> Filter {
    match view {
        None => Filter::NotJoined,
        Some(v) => {
            let mut sources: Vec<IpAddr> = v.sources;
            sources.sort();
            Filter::Joined {
                mode: v.mode,
                sources,
            }
        }
    }
}

/// Play `seq` through the daemon as one session client; `iface` names the interface.
async fn through_daemon(daemon: &Daemon, seq: &Sequence, iface: &str) -> SequenceOutcome {
    let mut client = Client::register(daemon.socket(), &seq.name).await.unwrap();
    let mut steps = Vec::new();
    for step in &seq.steps {
        let group = seq.group_addr(&step.group);
        let result = match step.request.clone() {
            Request::JoinGroup => client.join(iface, group).await,
            Request::LeaveGroup => client.leave(iface, group).await,
            Request::BlockSource { source } => client.block(iface, group, source).await,
            Request::UnblockSource { source } => client.unblock(iface, group, source).await,
            Request::JoinSourceGroup { source } => client.join_source(iface, group, source).await,
            Request::LeaveSourceGroup { source } => client.leave_source(iface, group, source).await,
            Request::SetFilter { mode, sources } => {
                client.set_filter(iface, group, mode, sources).await
            }
        };
        steps.push(outcome(result));
    }
    let mut filters = std::collections::BTreeMap::new();
    for (name, addr) in &seq.groups {
        let got = match client.filter(iface, *addr).await {
            Ok((own, _)) => filter(own),
            // A group msfilter refuses to read (not multicast, other family) holds nothing.
            Err(ClientError::Refused(e)) if e.kind == ErrorKind::Invalid => Filter::NotJoined,
            Err(e) => panic!("{}: reading {addr}: {e}", seq.name),
        };
        filters.insert(name.clone(), got);
    }
    client.deregister().await.unwrap();
    SequenceOutcome { steps, filters }
}

/// The direct run's final filter as msfilter reports it: a filter the kernel cannot read
/// is not a membership.
fn comparable(filter: &Filter) -> Filter {
    match filter {
        Filter::Error(_) => Filter::NotJoined,
        f => f.clone(),
    }
}

#[test]
fn every_sequence_behaves_the_same_through_msfilter() {
    let bed = Bed::new("equiv").unwrap();
    let daemon = Daemon::start(&bed.ns, &[]).unwrap();
    let rt = Runtime::new().unwrap();
    let iface = bed.ifindex.to_string();
    let mut differences = Vec::new();
    let (mut compared, mut missing, mut other_family) = (0, 0, 0);

    for seq in table() {
        let via = bed.ns.run(|| {
            // The sequence's per-namespace limits hold for the daemon too (same namespace).
            let _limits: Vec<LimitGuard> = seq
                .limits
                .iter()
                .map(|&(limit, value): &(Limit, u32)| limit.set_scoped(value).unwrap())
                .collect();
            let iface = match seq.interface {
                Interface::Given => iface.clone(),
                Interface::Missing => "4000000".to_string(),
            };
            rt.block_on(through_daemon(&daemon, &seq, &iface))
        });
        if seq.interface == Interface::Missing {
            missing += 1;
            for (step, got) in seq.steps.iter().zip(&via.steps) {
                match got {
                    StepOutcome::Invalid(why) if why == "no interface with index 4000000" => {}
                    other => differences.push(format!(
                        "{}: `{}` on a missing interface gave {other}",
                        seq.name, step.line
                    )),
                }
            }
            continue;
        }
        if seq
            .groups
            .iter()
            .any(|(_, g)| msfilter::sockopt::Family::of(*g) != seq.family)
        {
            other_family += 1;
            // Its join opens a socket of the group's own family, which the kernel accepts.
            if via.steps.first() != Some(&StepOutcome::Ok) {
                differences.push(format!(
                    "{}: joining a group in its own family should succeed, got {:?}",
                    seq.name,
                    via.steps.first()
                ));
            }
            continue;
        }
        let direct = bed.run_direct(&seq);
        compared += 1;
        for (i, (step, (d, v))) in seq
            .steps
            .iter()
            .zip(direct.steps.iter().zip(&via.steps))
            .enumerate()
        {
            if !d.same_kind(v) {
                differences.push(format!(
                    "{} step {} `{}`: directly {d}, through msfilter {v}",
                    seq.name,
                    i + 1,
                    step.line
                ));
            }
        }
        for (name, d) in &direct.filters {
            let v = &via.filters[name];
            if comparable(d) != *v {
                differences.push(format!(
                    "{} final filter of {name}: directly {d}, through msfilter {v}",
                    seq.name
                ));
            }
        }
    }
    println!(
        "{compared} sequences compared step by step; by design: {missing} on a missing \
         interface, {other_family} with a group of the socket's other family"
    );
    assert!(
        missing + other_family <= 10,
        "too many sequences left out of the comparison"
    );
    assert!(compared >= 40, "only {compared} sequences compared");
    assert!(
        differences.is_empty(),
        "{} differences:\n{}\n--- daemon log ---\n{}",
        differences.len(),
        differences.join("\n"),
        daemon.log()
    );
}
