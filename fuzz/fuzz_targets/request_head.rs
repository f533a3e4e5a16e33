//! Request and response heads from arbitrary bytes: parse, check, decide the framing, and
//! write the head sluice would forward. Nothing may panic, and whatever sluice forwards must
//! parse again to the same method, target and framing, so sluice and the peer behind it can
//! never disagree about where a message ends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::http::framing::{request_framing, response_framing, BodyFraming};
use sluice::http::head::{parse_request, parse_response, RequestHead, ResponseHead, Version, MAX_HEADERS};
use sluice::http::headers::{write_request_head, write_response_head, Forwarded, ResponseFraming};
use sluice::http::request::check_request;
use std::net::IpAddr;

/// Fields sluice may add to a request it forwards: Host, X-Forwarded-For, -Proto and -Host,
/// Via, Connection and the framing field.
const ADDED_FIELDS: usize = 7;

fuzz_target!(|data: &[u8]| {
    request(data);
    response(data, "GET");
    response(data, "HEAD");
});

fn request(data: &[u8]) {
    let mut head = RequestHead::default();
    let Ok(Some(len)) = parse_request(data, &mut head) else { return };
    assert!(len <= data.len());
    if check_request(&mut head).is_err() || head.headers.len() + ADDED_FIELDS > MAX_HEADERS {
        return;
    }
    let Ok(framing) = request_framing(&head) else { return };
    let mut out = Vec::new();
    write_request_head(&mut out, &head, framing, Forwarded::plain(IpAddr::from([192, 0, 2, 1])), "127.0.0.1:9000");
    let mut again = RequestHead::default();
    let again_len = match parse_request(&out, &mut again) {
        Ok(Some(len)) => len,
        other => panic!("forwarded head does not parse: {other:?}\n{}", String::from_utf8_lossy(&out)),
    };
    assert_eq!(again_len, out.len());
    assert_eq!((&again.method, &again.target), (&head.method, &head.target));
    assert_eq!(request_framing(&again), Ok(framing), "{}", String::from_utf8_lossy(&out));
    assert_eq!(check_request(&mut again), Ok(false), "{}", String::from_utf8_lossy(&out));
}

fn response(data: &[u8], method: &str) {
    let mut head = ResponseHead::default();
    let Ok(Some(len)) = parse_response(data, &mut head) else { return };
    assert!(len <= data.len());
    if head.headers.len() + ADDED_FIELDS > MAX_HEADERS {
        return;
    }
    let Ok(framing) = response_framing(&head, method) else { return };
    let how = ResponseFraming {
        framing,
        keep_alive: framing != BodyFraming::UntilClose,
        client_version: Version::Http11,
        backend: None,
        set_cookie: None,
    };
    let mut out = Vec::new();
    write_response_head(&mut out, &head, &how);
    let mut again = ResponseHead::default();
    match parse_response(&out, &mut again) {
        Ok(Some(_)) => {}
        other => panic!("relayed head does not parse: {other:?}\n{}", String::from_utf8_lossy(&out)),
    }
    assert_eq!(again.status, head.status);
    assert_eq!(response_framing(&again, method), Ok(framing), "{}", String::from_utf8_lossy(&out));
}
