"""What a search says about its choice (`SearchOutcome.lines`), for the outcomes a real run may not reach."""

from dg_heads.heads import HeadMask
from dg_heads.methods.aat.report import SearchOutcome


def test_no_mask_that_scores_higher_than_none_is_said_and_nothing_ablated():
    outcome = SearchOutcome("ga", (4, 4), HeadMask(), unmasked=0.5, masked=0.5, best_ablated=0.4375,
                            masks_scored=9, all_equal=False)
    assert outcome.lines() == (["dg-heads: AAT ga: no head mask improved the source validation accuracy (0.5000 "
                                "with no head ablated; the best mask that ablates heads scored 0.4375 of 9 masks "
                                "scored): nothing is ablated"], None)
    assert outcome.metrics()["search/heads_ablated"] == 0.0
