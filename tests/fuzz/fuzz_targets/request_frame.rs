//! Request frames as the broker reads them off a connection (the bytes after the 4-byte size
//! prefix): the header parse of `dispatch`, then the body decode the API's handler starts with,
//! at the version the header names. Property: no panic, no abort, no allocation beyond
//! libFuzzer's `-malloc_limit_mb`; every outcome (a decoded request or a refusal) is allowed.
#![no_main]

use std::rc::Rc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringbroker::acl::Session;
use ringbroker::kafka::dispatch::{self, ParsedFrame, Request};

fuzz_target!(|data: &[u8]| {
    let ParsedFrame::Request {
        handler,
        header,
        body,
    } = dispatch::parse_frame(Bytes::copy_from_slice(data))
    else {
        return;
    };
    let request = Request {
        api_key: handler.key,
        header,
        body,
        session: Rc::new(Session::anonymous(None)),
    };
    let _ = dispatch::decode_body(&request);
});
