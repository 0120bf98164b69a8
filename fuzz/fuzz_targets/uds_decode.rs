//! Any bytes as a UDS request or response: decoding never panics, and what decodes survives
//! its own encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = diag::uds::Request::decode(data) {
        assert_eq!(diag::uds::Request::decode(&request.encode()).ok(), Some(request));
    }
    if let Ok(response) = diag::uds::Response::decode(data) {
        assert_eq!(diag::uds::Response::decode(&response.encode()).ok(), Some(response));
    }
});
