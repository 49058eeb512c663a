"""The report's training-adequacy table counts judged fits once per (dataset, fit, seed)."""

from bench.report.adequacy import adequacy_frame, adequacy_markdown, adequacy_table, reason_kind


def _record(encoder, dataset, seed, passed, head="gaussian", reasons=(), judged=True):
    return {"kind": "latent", "encoder": encoder, "head": head, "dataset": dataset, "seed": seed,
            "adequacy": {"judged": judged, "passed": passed, "reasons": list(reasons)}}


def test_seeds_passed_per_fit_and_dataset_with_reasons_without_figures():
    falling = "loss: still falling at the end: the last 6 of 50 points drop 0.21 of the run"
    records = [_record("simclr", "busi", 0, True), _record("simclr", "busi", 0, True, head="knn"),  # one fit, two heads
               _record("simclr", "busi", 1, False, reasons=[falling]),
               _record("simclr", "busi", 2, False, reasons=[falling, "no better than untrained on validation normals: "
                                                                    "normal-fit ratio 1.04 >= 1.00"]),
               _record("vae", "pneumonia", 0, True),
               _record("imagenet/x", "busi", 0, True, judged=False),          # frozen: not judged, not listed
               {"kind": "detector", "encoder": None, "detector": "ddad_asr", "dataset": "busi", "seed": 0,
                "adequacy": {"judged": True, "passed": False, "reasons": ["NDM0: still falling at the end: 2 of 4"]}}]
    table = adequacy_table(adequacy_frame(records)).set_index("encoder / detector")
    assert list(table.index) == ["ddad_asr", "simclr", "vae"]
    assert table.loc["simclr", "busi"] == "1/3" and table.loc["simclr", "pneumonia"] == "–"
    assert table.loc["vae", "pneumonia"] == "1/1" and table.loc["ddad_asr", "busi"] == "0/1"
    assert table.loc["simclr", "why not (fits)"] == ("loss: still falling at the end (2); "
                                                     "no better than untrained on validation normals (1)")
    assert reason_kind(falling) == "loss: still falling at the end"
    assert reason_kind("loss: ends at 7.217, not below chance 6.931") == "loss: ends at x, not below chance x"
    assert "| simclr | 1/3 | – |" in adequacy_markdown(table.reset_index())
