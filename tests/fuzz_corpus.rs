//! The fuzz targets' seed corpus (fuzz/corpus, built from the golden vectors) run as ordinary
//! tests, so every invariant the fuzzer checks holds under `cargo test` too.

use ssm_session::fuzzing;

fn run_corpus(target: &str, check: fn(&[u8])) {
    let dir = format!("{}/fuzz/corpus/{target}", env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = entry.unwrap().path();
        check(&std::fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count >= 5, "{dir} holds only {count} seeds");
}

#[test]
fn frame_decode_corpus() {
    run_corpus("frame_decode", fuzzing::frame_decode);
}

#[test]
fn payload_json_corpus() {
    run_corpus("payload_json", fuzzing::payload_json);
}

#[test]
fn session_ops_corpus() {
    run_corpus("session_ops", fuzzing::session_ops);
}

#[test]
fn smux_stream_corpus() {
    run_corpus("smux_stream", fuzzing::smux_stream);
}

#[test]
fn relay_ops_corpus() {
    fuzzing::relay_ops(&[]);
    run_corpus("relay", fuzzing::relay_ops);
}

#[test]
fn gateway_inputs_corpus() {
    run_corpus("gateway_inputs", fuzzing::gateway_inputs);
}
