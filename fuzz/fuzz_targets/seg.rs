#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| medseg_fuzz::seg(data));
