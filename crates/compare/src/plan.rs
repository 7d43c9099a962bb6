//! Which servers take part, and which (server, load generator) rows each workload gets.

use crate::cli::Options;
use crate::matrix::{LoadGen, Proto, Server, Workload};
use crate::{measure, procs};

/// select(2) watches descriptors below 1024 only; leave room for the server's own.
pub const SELECT_MAX_CONNS: usize = 1000;

/// One row of a workload: a server driven by a load generator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub server: Server,
    pub loadgen: LoadGen,
}

/// The servers this run compares, probing that each backend can run here; the ones left out
/// are listed in `skipped` with the reason. Returns whether wrk rows are added.
pub fn servers(opts: &Options, ringpoll: &std::path::Path, skipped: &mut Vec<String>) -> (Vec<Server>, bool) {
    let mut servers = Vec::new();
    // With variants, the plain backends run only when named.
    let all_backends = opts.backends.is_empty() && opts.variants.is_empty();
    for name in crate::BACKENDS {
        if !all_backends && !opts.backends.iter().any(|x| x == name) {
            continue;
        }
        match measure::backend_available(ringpoll, name) {
            Ok(()) => {
                servers.push(Server::Ringpoll { backend: name.into() });
                if name == "epoll" {
                    servers.push(Server::RingpollSplice);
                }
                if name == "uring" {
                    servers.push(Server::RingpollUringRelay { relay: crate::URING_OTHER_RELAY.into() });
                }
            }
            Err(e) => skipped.push(format!("{name}: {e}")),
        }
    }
    for v in &opts.variants {
        let Server::RingpollVariant { backend, .. } = v else { continue };
        match measure::backend_available(ringpoll, backend) {
            Ok(()) => servers.push(v.clone()),
            Err(e) => skipped.push(format!("{}: {e}", v.name())),
        }
    }
    let wanted = |p: &str| opts.all_peers || opts.peers.iter().any(|x| x == p);
    for (server, bin) in
        [(Server::TokioEcho, "tokio-echo"), (Server::MonoioEcho, "monoio-echo"), (Server::TokioHttp, "tokio-http")]
    {
        if !wanted(server.peer_name().unwrap_or_default()) {
            continue;
        }
        if opts.peers_dir.join(bin).is_file() {
            servers.push(server);
        } else {
            skipped.push(format!("{bin}: not built (run bench-scripts/build-peers.sh)"));
        }
    }
    if wanted("nginx") {
        if procs::have("nginx") {
            servers.push(Server::Nginx);
            servers.push(Server::NginxStream);
        } else {
            skipped.push("nginx: not installed".into());
        }
    }
    let mut wrk = false;
    if opts.all_peers {
        wrk = procs::have("wrk");
        if !wrk {
            skipped.push("wrk: not installed".into());
        }
    }
    (servers, wrk)
}

/// The rows of workload `w`: every server that speaks its protocol (select only below its
/// descriptor cap), plus wrk rows for plain HTTP against epoll and nginx.
pub fn members(servers: &[Server], w: &Workload, wrk: bool, conns: usize, skipped: &mut Vec<String>) -> Vec<Member> {
    let mut out = Vec::new();
    for s in servers.iter().filter(|s| s.serves(w.proto)) {
        let select =
            matches!(s, Server::Ringpoll { backend } | Server::RingpollVariant { backend, .. } if backend == "select");
        if select && conns + w.idle > SELECT_MAX_CONNS {
            let why = format!("select on {}: {} connections exceed FD_SETSIZE", w.name, conns + w.idle);
            if !skipped.contains(&why) {
                skipped.push(why);
            }
            continue;
        }
        out.push(Member { server: s.clone(), loadgen: LoadGen::Ringpoll });
        let wrk_row = matches!(s, Server::Nginx) || matches!(s, Server::Ringpoll { backend } if backend == "epoll");
        if wrk && w.proto == Proto::Http && w.depth == 1 && w.path.is_empty() && wrk_row {
            out.push(Member { server: s.clone(), loadgen: LoadGen::Wrk });
        }
    }
    out
}

/// The workloads that share their rounds, as indices into `plan`: with `interleave` (the
/// idle experiment), consecutive workloads that differ only in their idle connections form
/// one group, so that each is compared with its zero-idle twin in paired rounds; otherwise
/// every workload is its own group.
#[must_use]
pub fn groups(plan: &[(Workload, Vec<Member>)], interleave: bool) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, (w, _)) in plan.iter().enumerate() {
        let same = |j: usize| {
            let v = &plan[j].0;
            (v.proto, v.size, v.conns, v.depth, v.net) == (w.proto, w.size, w.conns, w.depth, w.net)
        };
        match out.last_mut() {
            Some(g) if interleave && same(g[0]) => g.push(i),
            _ => out.push(vec![i]),
        }
    }
    out
}

/// The shuffled order of round `round` of workload number `wi` (deterministic in the seed,
/// so that a resumed run continues the same plan).
#[must_use]
pub fn order(n: usize, seed: u64, wi: usize, round: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mix =
        seed ^ (wi as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (round as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    fastrand::Rng::with_seed(mix).shuffle(&mut v);
    v
}

/// The runs of one anchored round, as indices into `shuffled` (the round's members in their
/// shuffled order, `anchor` among them): the anchor first, last and between every two others,
/// `A x1 A x2 A … xk A`. Each member is then measured right beside two runs of the anchor and
/// is compared against their (geometric) mean: a change of the machine's state between two
/// runs a whole round apart no longer falls between the two sides of a ratio, and a steady
/// drift cancels. The anchor runs `k + 1` times per round, so a round is `2k + 1` runs long
/// instead of `k + 1`. Without an anchor (or with nothing to compare it with) the shuffled
/// order is returned as it is.
#[must_use]
pub fn sequence(shuffled: &[usize], anchor: Option<usize>) -> Vec<usize> {
    let Some(a) = anchor.filter(|a| shuffled.contains(a) && shuffled.len() > 1) else {
        return shuffled.to_vec();
    };
    let mut out = vec![a];
    for &x in shuffled.iter().filter(|&&x| x != a) {
        out.push(x);
        out.push(a);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anchored_round_puts_the_anchor_beside_every_other_member() {
        let shuffled = order(5, 9, 0, 4);
        let s = sequence(&shuffled, Some(2));
        assert_eq!(s.len(), 9);
        for (i, &x) in s.iter().enumerate() {
            assert_eq!(x == 2, i % 2 == 0, "{s:?}");
        }
        let others: Vec<usize> = shuffled.iter().copied().filter(|&x| x != 2).collect();
        let got: Vec<usize> = s.iter().copied().filter(|&x| x != 2).collect();
        assert_eq!(got, others, "the others keep their shuffled order");
        assert_eq!(sequence(&shuffled, None), shuffled);
        assert_eq!(sequence(&[3], Some(3)), vec![3], "nothing to compare the anchor with");
        assert_eq!(sequence(&shuffled, Some(7)), shuffled, "an anchor that is not a member");
    }

    #[test]
    fn orders_are_shuffled_per_round_and_reproducible() {
        assert_eq!(order(6, 42, 0, 3), order(6, 42, 0, 3));
        let distinct: std::collections::HashSet<Vec<usize>> = (0..20).map(|r| order(6, 42, 0, r)).collect();
        assert!(distinct.len() > 10, "rounds get different orders");
        let mut o = order(6, 1, 2, 3);
        o.sort_unstable();
        assert_eq!(o, (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn the_idle_experiment_interleaves_idle_levels_of_one_active_count() {
        let plan: Vec<(Workload, Vec<Member>)> =
            crate::matrix::idle_workloads(&[0, 200], &[1, 8]).into_iter().map(|w| (w, Vec::new())).collect();
        assert_eq!(groups(&plan, true), vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(groups(&plan, false), vec![vec![0], vec![1], vec![2], vec![3]]);
    }

    #[test]
    fn select_is_left_out_above_its_cap() {
        let servers = vec![Server::Ringpoll { backend: "select".into() }, Server::Ringpoll { backend: "epoll".into() }];
        let w = crate::matrix::main_workloads()[0].clone();
        let mut skipped = Vec::new();
        assert_eq!(members(&servers, &w, false, 64, &mut skipped).len(), 2);
        assert_eq!(members(&servers, &w, false, 4096, &mut skipped).len(), 1);
        assert_eq!(skipped.len(), 1);
    }
}
