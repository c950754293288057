//! The public oracle cases in `../shared/validation/cases` pass through the library.

mod common;

use wgattn::{Kernel, validation};

fn run(kernel: Kernel) {
    let Some(ctx) = common::ctx() else { return };
    let Some(dir) = common::cases_dir() else {
        return;
    };
    let files = validation::case_files(&dir).unwrap();
    assert!(!files.is_empty());
    for f in files {
        let r = validation::run_case_file(ctx, &f, kernel)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(r.passed(), "{}: {:?} with {}", r.name, r.out, r.kernel);
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
