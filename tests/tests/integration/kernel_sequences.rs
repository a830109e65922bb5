//! Every scripted sequence, run directly on plain sockets in a fresh namespace: each step's
//! outcome and each group's final filter must be what the table (docs/kernel.md, as measured)
//! says.

use msfilter_testbed::sequences::{Bed, Expect, Sequence, shared_socket_table, table};

/// Global limits the sequences rely on (not settable per namespace) must hold on this
/// machine; checked from the test's own thread, which is in the initial namespace.
fn check_assumptions(sequences: &[Sequence]) {
    for seq in sequences {
        for &(limit, value) in &seq.assumes {
            let actual = limit
                .read()
                .unwrap_or_else(|e| panic!("{}: checking an assumed limit: {e}", seq.name));
            assert_eq!(
                actual, value,
                "{} assumes the machine-wide {limit} is {value}; it is {actual}",
                seq.name
            );
        }
    }
}

/// Run each sequence in its own fresh namespace; collect every mismatch before failing.
fn run_all(sequences: &[Sequence]) {
    assert!(!sequences.is_empty());
    check_assumptions(sequences);
    let mut failures = Vec::new();
    for seq in sequences {
        let bed = Bed::new("seq").unwrap_or_else(|e| panic!("namespace for {}: {e}", seq.name));
        if let Err(e) = bed.run_direct(seq).check(seq) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} sequences differ from the table:\n{}",
        failures.len(),
        sequences.len(),
        failures.join("\n")
    );
}

fn of_family(tag: &str) -> Vec<Sequence> {
    table()
        .into_iter()
        .filter(|s| s.name.contains(tag))
        .collect()
}

#[test]
fn ipv4_sequences_match_the_table() {
    run_all(&of_family("/v4/"));
}

#[test]
fn ipv6_sequences_match_the_table() {
    run_all(&of_family("/v6/"));
}

/// The `igmp_max_memberships` sequences (one socket holding many groups; not the daemon's
/// layout).
#[test]
fn shared_socket_sequences_match_the_table() {
    run_all(&shared_socket_table());
}

/// What msfilter refuses before the kernel is asked: the kernel's own verdict is as the
/// table says (EINVAL for a unicast group, but it would accept a multicast source).
#[test]
fn kernel_verdicts_on_refused_requests_match_the_table() {
    let refused: Vec<Sequence> = table()
        .into_iter()
        .filter(|s| {
            s.steps
                .iter()
                .any(|st| matches!(st.expect, Expect::Invalid { .. }))
        })
        .collect();
    assert!(!refused.is_empty());
    check_assumptions(&refused);
    let mut failures = Vec::new();
    for seq in &refused {
        let bed = Bed::new("kseq").unwrap_or_else(|e| panic!("namespace for {}: {e}", seq.name));
        if let Err(e) = bed.run_kernel_only(seq).check_kernel_only(seq) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
