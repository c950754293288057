//! The public oracle cases in `tests/data/validation` (see its README) pass through the
//! library with every kernel.

use crate::common;

use wgattn::{Kernel, validation};

fn run(kernel: Kernel) {
    let Some(ctx) = common::ctx() else { return };
    let dir = common::cases_dir();
    let files = validation::case_files(&dir).unwrap();
    assert!(!files.is_empty());
    for f in files {
        let r = validation::run_case_file(ctx, &f, kernel)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(r.passed(), "{}: {:?} with {}", r.name, r.verdict, r.kernel);
    }
}

#[test]
fn cases_pass_with_auto() {
    run(Kernel::Auto);
}

#[test]
fn cases_pass_with_three_pass() {
    run(Kernel::ThreePass);
}

/// The cases of tests/data (bias, mask, window, ALiBi, soft-cap, f16) pass in every kernel.
#[test]
fn own_cases_with_bias_and_mask_pass_in_every_kernel() {
    let Some(ctx) = common::ctx() else { return };
    let dir = common::own_cases_dir();
    let files = validation::case_files(&dir).unwrap();
    assert!(files.len() >= 2);
    let mut with_bias = 0;
    let mut with_mask = 0;
    for f in &files {
        let case = wgattn::io::read_case(f).unwrap();
        with_bias += case.bias.is_some() as usize;
        with_mask += case.mask.is_some() as usize;
        for kernel in [
            Kernel::Auto,
            Kernel::ThreePass,
            Kernel::Flash,
            Kernel::SplitKv,
        ] {
            let r = validation::run_case_file(ctx, f, kernel).unwrap();
            assert!(r.passed(), "{} with {kernel}: {:?}", r.name, r.verdict);
        }
    }
    assert!(
        with_bias >= 2 && with_mask >= 2,
        "bias {with_bias}, mask {with_mask}"
    );
}
