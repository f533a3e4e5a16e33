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

fn one_backend(reply: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> (TestBackend, Sluice) {
    let backend = TestBackend::start(reply);
    let sluice = Sluice::start(&[&backend.url()], "");
    (backend, sluice)
}

#[test]
fn keep_alive_client_gets_many_answers_over_one_backend_connection() {
    let (backend, sluice) = one_backend(|s| Reply::ok(&s.target));
    let mut c = sluice.connect();
    for i in 0..20 {
        c.send(format!("GET /{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let r = c.response().unwrap();
        assert_eq!((r.status, r.text()), (200, format!("/{i}")), "{}", r.raw_head);
        assert_eq!(r.header("connection"), None, "{}", r.raw_head);
    }
    assert_eq!(backend.connection_count(), 1);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_backend, sluice) = one_backend(|s| Reply::ok(&s.target));
    let mut c = sluice.connect();
    c.send(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\nGET /3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    for want in ["/1", "/2", "/3"] {
        assert_eq!(c.response().unwrap().text(), want);
    }
    assert!(c.is_closed());
}

#[test]
fn connection_close_from_the_client_is_honoured() {
    let (_backend, sluice) = one_backend(|_| Reply::ok("x"));
    let mut c = sluice.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = c.response().unwrap();
    assert_eq!(r.header("connection"), Some("close"), "{}", r.raw_head);
    assert!(c.is_closed());
}

#[test]
fn http_1_0_closes_unless_keep_alive_is_asked_for() {
    let (backend, sluice) = one_backend(|_| Reply::ok("x"));
    let mut c = sluice.connect();
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    let r = c.response().unwrap();
    assert_eq!((r.status, r.header("connection")), (200, Some("close")), "{}", r.raw_head);
    assert!(c.is_closed());

    let mut c = sluice.connect();
    for _ in 0..3 {
        c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.response().unwrap();
        assert_eq!((r.status, r.header("connection")), (200, Some("keep-alive")), "{}", r.raw_head);
    }
    let seen = backend.requests();
    assert!(seen.iter().all(|s| s.version == 1), "sluice speaks HTTP/1.1 to backends");
}

#[test]
fn backend_connection_close_is_not_reused_but_the_client_stays() {
    let (backend, sluice) = one_backend(|_| Reply::Text {
        status: 200,
        headers: vec![("Connection".into(), "close".into())],
        body: b"bye".to_vec(),
    });
    let mut c = sluice.connect();
    for _ in 0..3 {
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.response().unwrap();
        assert_eq!((r.status, r.header("connection")), (200, None), "{}", r.raw_head);
    }
    assert_eq!(backend.connection_count(), 3);
}

#[test]
fn hop_by_hop_request_headers_are_dropped_and_forwarding_headers_added() {
    let (backend, sluice) = one_backend(|_| Reply::ok("x"));
    let mut c = sluice.connect();
    c.send(
        b"GET /p?q=1 HTTP/1.1\r\nHost: site.example:8080\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n\
          Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\n\
          X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nAccept: */*\r\n\r\n",
    );
    assert_eq!(c.response().unwrap().status, 200);
    let seen = &backend.requests()[0];
    let head = String::from_utf8_lossy(&seen.raw_head);
    assert_eq!((seen.method.as_str(), seen.target.as_str()), ("GET", "/p?q=1"));
    for dropped in ["connection", "x-secret", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"] {
        assert_eq!(seen.header(dropped), None, "{dropped} was forwarded:\n{head}");
    }
    assert_eq!(seen.header("host"), Some("site.example:8080"), "{head}");
    assert_eq!(seen.header("accept"), Some("*/*"), "{head}");
    assert_eq!(seen.header("x-forwarded-for"), Some("203.0.113.7, 127.0.0.1"), "{head}");
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"), "{head}");
    assert_eq!(seen.header("x-forwarded-host"), Some("site.example:8080"), "{head}");
    assert_eq!(seen.header_count("x-forwarded-host"), 1, "{head}");
}

#[test]
fn hop_by_hop_response_headers_are_dropped() {
    let (_backend, sluice) = one_backend(|_| Reply::Text {
        status: 200,
        headers: vec![
            ("Connection".into(), "X-Internal".into()),
            ("X-Internal".into(), "1".into()),
            ("Keep-Alive".into(), "timeout=9".into()),
            ("Upgrade".into(), "nothing".into()),
            ("Set-Cookie".into(), "a=b".into()),
        ],
        body: b"x".to_vec(),
    });
    let r = sluice.get("/");
    for dropped in ["x-internal", "keep-alive", "upgrade"] {
        assert_eq!(r.header(dropped), None, "{dropped} was forwarded:\n{}", r.raw_head);
    }
    assert_eq!(r.header("set-cookie"), Some("a=b"), "{}", r.raw_head);
    assert_eq!(r.header("x-forwarded-server"), None, "{}", r.raw_head);
}

#[test]
fn content_length_bodies_are_relayed_both_ways() {
    let (backend, sluice) =
        one_backend(|s| Reply::Text { status: 201, headers: vec![], body: s.body.iter().rev().copied().collect() });
    let mut c = sluice.connect();
    c.send(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    let r = c.response().unwrap();
    assert_eq!((r.status, r.text()), (201, "olleh".to_string()));
    let seen = &backend.requests()[0];
    assert_eq!((seen.body.as_slice(), seen.header("content-length")), (&b"hello"[..], Some("5")));
}

#[test]
fn chunked_request_bodies_are_decoded_and_sent_on_chunked() {
    let (backend, sluice) = one_backend(|s| Reply::ok(&String::from_utf8_lossy(&s.body)));
    let mut c = sluice.connect();
    c.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
    assert_eq!(c.response().unwrap().text(), "hello world");
    let seen = &backend.requests()[0];
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
    assert_eq!(seen.header("content-length"), None);
    // The connection is still in step: a second request works.
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().unwrap().status, 200);
}

#[test]
fn chunked_responses_stay_chunked_for_http_1_1_and_are_decoded_for_http_1_0() {
    let backend =
        raw_backend(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n");
    let sluice = Sluice::start(&[&backend.url()], "");
    let mut c = sluice.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response().unwrap();
    assert_eq!((r.header("transfer-encoding"), r.text().as_str()), (Some("chunked"), "abcdefg"), "{}", r.raw_head);

    let mut c = sluice.connect();
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    let all = c.read_to_close();
    assert!(all.ends_with("\r\n\r\nabcdefg"), "{all:?}");
    assert!(!all.to_ascii_lowercase().contains("transfer-encoding"), "{all:?}");
}

#[test]
fn read_until_close_responses_are_relayed_and_the_client_is_closed() {
    let backend = TestBackend::start(|_| Reply::RawThenClose(b"HTTP/1.1 200 OK\r\n\r\nall of it".to_vec()));
    let sluice = Sluice::start(&[&backend.url()], "");
    let mut c = sluice.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let all = c.read_to_close();
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all:?}");
    assert!(all.contains("Connection: close\r\n"), "{all:?}");
    assert!(all.ends_with("\r\n\r\nall of it"), "{all:?}");
}

#[test]
fn head_204_and_304_responses_carry_no_body() {
    let (_backend, sluice) = one_backend(|s| match s.target.as_str() {
        "/204" => Reply::Raw(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()),
        "/304" => Reply::Raw(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n".to_vec()),
        _ => Reply::ok("0123456789"),
    });
    let mut c = sluice.connect();
    c.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response(true).unwrap();
    assert_eq!((r.status, r.header("content-length")), (200, Some("10")), "{}", r.raw_head);
    c.send(b"GET /204 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().unwrap().status, 204);
    c.send(b"GET /304 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response().unwrap();
    assert_eq!((r.status, r.header("content-length")), (304, Some("10")), "{}", r.raw_head);
    // Nothing stray is left on the connection: the next exchange reads cleanly.
    c.send(b"GET /last HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().unwrap().text(), "0123456789");
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let (backend, sluice) = one_backend(|s| Reply::ok(&String::from_utf8_lossy(&s.body)));
    let mut c = sluice.connect();
    c.send(b"PUT /f HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.response().unwrap();
    assert_eq!(interim.status, 100);
    c.send(b"data");
    assert_eq!(c.response().unwrap().text(), "data");
    assert_eq!(backend.requests()[0].header("expect"), None);
}

#[test]
fn interim_responses_are_passed_to_http_1_1_clients() {
    let backend = raw_backend(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let sluice = Sluice::start(&[&backend.url()], "");
    let mut c = sluice.connect();
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let hints = c.response().unwrap();
    assert_eq!((hints.status, hints.header("link")), (103, Some("</a.css>; rel=preload")));
    assert_eq!(c.response().unwrap().text(), "ok");
}

#[test]
fn expose_backend_names_the_backend_that_answered() {
    let backend = TestBackend::named("a");
    let sluice = Sluice::start(&[&backend.url()], r#""exposeBackend": true,"#);
    let r = sluice.get("/");
    assert_eq!(r.header("x-forwarded-server"), Some(backend.url().as_str()), "{}", r.raw_head);
}
