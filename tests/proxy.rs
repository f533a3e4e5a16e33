//! Relaying real traffic: rotation, keep-alive both ways, pipelining, header rewriting,
//! bodies in every framing, interim responses.

mod common;

use common::*;

#[test]
fn round_robin_rotates_over_new_connections() {
    let backends = [TestBackend::named("a"), TestBackend::named("b"), TestBackend::named("c")];
    let urls: Vec<String> = backends.iter().map(TestBackend::url).collect();
    let sluice = Sluice::start(&urls.iter().map(String::as_str).collect::<Vec<_>>(), "");
    let bodies: Vec<String> = (0..6).map(|_| sluice.get("/").text()).collect();
    assert_eq!(bodies, ["a", "b", "c", "a", "b", "c"]);
}
