//! `"explain": true` through the running proxy: the `X-Sluice-Decision` field on proxied
//! responses and on sluice's own answers when no backend could serve, for every algorithm.

mod common;

use common::*;
use sluice::config::Algorithm;
use std::time::Duration;

/// sluice with `explain` on over `servers` (JSON values) and `extra` top-level keys.
fn explained(servers: &[String], extra: &str) -> Sluice {
    let json = format!(
        r#"{{"listen": "127.0.0.1:0", "explain": true, "healthCheckInterval": "1m", {extra} "servers": [{}]}}"#,
        servers.join(", ")
    );
    Sluice::from_json(&json)
}

/// Waits until no exchange is in flight, so the next decision sees every backend idle (a
/// response can reach the client a moment before its exchange is counted out).
fn settle(sluice: &Sluice) {
    let idle = wait_until(Duration::from_secs(5), || {
        sluice.server().runtime().state().pools.iter().flat_map(|p| &p.backends).all(|b| b.active() == 0)
    });
    assert!(idle, "exchanges stayed in flight");
}

fn decision(response: &Response) -> String {
    let raw = &response.raw_head;
    response.header("x-sluice-decision").unwrap_or_else(|| panic!("no decision in {raw:?}")).to_string()
}

#[test]
fn decisions_are_not_shown_unless_explain_is_on() {
    let backend = TestBackend::named("a");
    let sluice = Sluice::start(&[&backend.url()], "");
    let response = sluice.get("/");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-sluice-decision"), None, "{}", response.raw_head);
}

#[test]
fn every_algorithm_names_each_candidate_its_pick_and_its_reason() {
    let names = ["a", "b", "c"];
    let backends: Vec<TestBackend> = names.iter().map(|n| TestBackend::named(n)).collect();
    let servers: Vec<String> =
        backends.iter().zip([3, 1, 1]).map(|(b, w)| format!(r#"{{"url": "{}", "weight": {w}}}"#, b.url())).collect();
    let expected_reason = [
        (Algorithm::RoundRobin, "reason=next in turn"),
        (Algorithm::WeightedRoundRobin, "reason=highest current weight"),
        (Algorithm::LeastConnections, "reason=fewest in flight for its weight"),
        (Algorithm::IpHash, "reason=highest score for client 127.0.0.1: its first choice"),
        (Algorithm::Random, "reason=drew "),
    ];
    for (algorithm, reason) in expected_reason {
        let sluice = explained(&servers, &format!(r#""algorithm": "{}","#, algorithm.name()));
        for _ in 0..4 {
            settle(&sluice);
            let response = sluice.get("/");
            let text = decision(&response);
            let answered = names.iter().position(|n| response.text() == *n).expect("a backend's name");
            assert!(text.starts_with(&format!("route=*; pool=default; algorithm={}; ", algorithm.name())), "{text}");
            for (b, w) in backends.iter().zip([3, 1, 1]) {
                assert!(text.contains(&format!("{} up in-flight=0 weight={w}", b.url())), "{text}");
            }
            assert!(text.contains(&format!("picked={};", backends[answered].url())), "{text}");
            assert!(text.contains(reason), "{algorithm:?}: {text}");
            assert!(text.ends_with("; attempt=1"), "{text}");
        }
    }
}

#[test]
fn scores_are_shown_where_the_algorithm_keeps_or_computes_them() {
    let backends: Vec<TestBackend> = ["a", "b"].iter().map(|n| TestBackend::named(n)).collect();
    let servers: Vec<String> = backends.iter().map(|b| format!("{:?}", b.url())).collect();
    //  smooth weighting, weights 1 and 1: after the first pick a is at -1, b at 1
    let sluice = explained(&servers, r#""algorithm": "weighted-round-robin","#);
    let text = decision(&sluice.get("/"));
    assert!(text.contains(&format!("{} up in-flight=0 weight=1 current=-1", backends[0].url())), "{text}");
    assert!(text.contains(&format!("{} up in-flight=0 weight=1 current=1", backends[1].url())), "{text}");
    let sluice = explained(&servers, r#""algorithm": "ip-hash","#);
    settle(&sluice);
    let text = decision(&sluice.get("/"));
    assert_eq!(text.matches(" score=").count(), 2, "{text}");
}

#[test]
fn a_retried_request_says_which_attempt_it_is_and_why_the_earlier_one_failed() {
    let closed = closed_port_url();
    let backend = TestBackend::named("b");
    let sluice = explained(&[format!("{closed:?}"), format!("{:?}", backend.url())], "");
    let response = sluice.get("/");
    assert_eq!(response.text(), "b");
    let text = decision(&response);
    assert!(text.contains(&format!("{closed} tried in-flight=0")), "{text}");
    assert!(text.contains(&format!("picked={};", backend.url())), "{text}");
    assert!(text.ends_with(&format!("attempt=2; earlier={closed}: connection refused")), "{text}");
}

#[test]
fn sluices_own_503_explains_that_no_candidate_was_available() {
    let closed = closed_port_url();
    let json = format!(
        r#"{{"listen": "127.0.0.1:0", "explain": true, "healthCheckInterval": "50ms",
            "healthCheck": {{"rise": 1, "fall": 1}}, "servers": [{closed:?}]}}"#
    );
    let sluice = Sluice::from_json(&json);
    let down =
        wait_until(Duration::from_secs(5), || !sluice.server().runtime().state().pools[0].backends[0].is_healthy());
    assert!(down, "the closed backend never went down");
    let response = sluice.get("/");
    assert_eq!(response.status, 503);
    let text = decision(&response);
    assert!(
        text.contains(&format!("candidates={closed} down in-flight=0 weight=1; picked=none; reason=nothing eligible")),
        "{text}"
    );
}

#[test]
fn a_routed_request_names_its_route_and_pool() {
    let api = TestBackend::named("api");
    let web = TestBackend::named("web");
    let json = format!(
        r#"{{"explain": true,
            "listeners": [{{"listen": "127.0.0.1:0", "routes": [
                {{"host": "api.test", "pathPrefix": "/v1", "pool": "api"}}, {{"pool": "web"}}]}}],
            "pools": {{"api": {{"servers": [{:?}], "algorithm": "least-connections"}}, "web": {{"servers": [{:?}]}}}}}}"#,
        api.url(),
        web.url()
    );
    let sluice = Sluice::from_json(&json);
    let mut c = sluice.connect();
    c.send(b"GET /v1/users HTTP/1.1\r\nHost: api.test\r\n\r\nGET /other HTTP/1.1\r\nHost: api.test\r\n\r\n");
    let text = decision(&c.response().unwrap());
    assert!(text.starts_with("route=api.test/v1; pool=api; algorithm=least-connections;"), "{text}");
    let text = decision(&c.response().unwrap());
    assert!(text.starts_with("route=*; pool=web; algorithm=round-robin;"), "{text}");
}

#[test]
fn a_redirect_listener_explains_its_307_and_its_503() {
    let closed = closed_port_url();
    let backend = TestBackend::named("b");
    let json = format!(
        r#"{{"explain": true,
            "listeners": [{{"listen": "127.0.0.1:0", "mode": "redirect", "pool": "web"}}],
            "pools": {{"web": {{"servers": [{:?}, {closed:?}], "algorithm": "ip-hash",
                "healthCheckInterval": "50ms", "healthCheck": {{"rise": 1, "fall": 1}}}}}}}}"#,
        backend.url()
    );
    let sluice = Sluice::from_json(&json);
    let down =
        wait_until(Duration::from_secs(5), || !sluice.server().runtime().state().pools[0].backends[1].is_healthy());
    assert!(down, "the closed backend never went down");
    let response = sluice.get("/x");
    assert_eq!(response.status, 307, "{}", response.raw_head);
    let text = decision(&response);
    assert!(text.starts_with("route=*; pool=web; algorithm=ip-hash; candidates="), "{text}");
    assert!(text.contains(&format!("{closed} down in-flight=0 weight=1 score=")), "{text}");
    assert!(text.contains(&format!("picked={}; reason=", backend.url())), "{text}");
    assert_eq!(response.header("location"), Some(format!("{}/x", backend.url()).as_str()));

    drop(backend);
    let pools = || sluice.server().runtime().state().pools[0].backends.iter().all(|b| !b.is_healthy());
    assert!(wait_until(Duration::from_secs(5), pools), "the stopped backend never went down");
    let response = sluice.get("/x");
    assert_eq!(response.status, 503, "{}", response.raw_head);
    assert!(decision(&response).contains("; picked=none; reason=nothing eligible; attempt=1"), "{}", response.raw_head);
}
