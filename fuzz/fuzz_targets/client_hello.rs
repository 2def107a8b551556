//! The ClientHello scanner on arbitrary bytes, split into reads at arbitrary points:
//! never a panic, and the same verdict (ALPN ids, SNI) however the bytes are split.
//! The first byte picks the split points, the rest is what the client sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_locator::proxy::hello::scan_reads;

const MAX: usize = 16 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, wire)) = data.split_first() else {
        return;
    };
    let whole = scan_reads(&[wire], MAX);
    // Split every (seed % 7 + 1) bytes, the way a slow client's reads arrive.
    let step = usize::from(seed % 7) + 1;
    let reads: Vec<&[u8]> = wire.chunks(step).collect();
    let split = scan_reads(&reads, MAX);
    let verdict = |r: &Result<Option<vault_locator::proxy::hello::ClientHello>, _>| match r {
        Ok(Some(h)) => Some((
            h.alpn().iter().map(<[u8]>::to_vec).collect::<Vec<_>>(),
            h.sni().map(str::to_string),
        )),
        _ => None,
    };
    assert_eq!(
        verdict(&whole),
        verdict(&split),
        "the split changed the verdict"
    );
    if wire.len() < MAX {
        assert_eq!(
            whole.is_err(),
            split.is_err(),
            "the split changed the verdict"
        );
    }
});
