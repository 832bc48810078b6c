#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ssm_session::fuzzing::relay_ops(data));
