//! Which adapter wgattn opens: the one `wgattn info` lists first.

use crate::common;

/// The adapter a default context opens is the first one `adapter_summaries` (and so
/// `wgattn info`) lists among those the `WGATTN_ADAPTER` filter accepts.
#[test]
fn the_chosen_adapter_is_the_first_listed() {
    let Some(ctx) = common::ctx() else { return };
    let filter = std::env::var("WGATTN_ADAPTER")
        .unwrap_or_default()
        .to_lowercase();
    let first = wgattn::adapter_summaries()
        .into_iter()
        .find(|a| {
            format!("{} {}", a.info.name, a.info.backend)
                .to_lowercase()
                .contains(&filter)
        })
        .expect("at least one adapter is listed");
    let chosen = ctx.adapter_info();
    assert_eq!(
        (&first.info.name, first.info.backend),
        (&chosen.name, chosen.backend)
    );
}
