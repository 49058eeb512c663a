"""``bench perf --profile``: the phases a run marks and the split of the units' time by kind of work."""

from __future__ import annotations

import json

from bench.cost.profile import ENV, Phases, breakdown, profile_lines


def _record(encoder, **timings):
    return {"kind": "latent", "encoder": encoder, "detector": None, "timings": timings}


def test_breakdown_sums_record_timings_per_unit_kind():
    records = [_record("simclr", encoder_fit_s=10.0, embed_s=1.0, fit_s=0.5, predict_s=2.0, metrics_s=0.25),
               _record("simclr", fit_s=1.5, predict_s=1.0, metrics_s=0.25),
               {"kind": "detector", "encoder": None, "detector": "ae", "timings": {"fit_s": 7.0, "dataset_s": 1.0}}]
    table = breakdown(records)
    assert table["encoder simclr"]["training"] == 10.0 and table["encoder simclr"]["head/detector fit"] == 2.0
    assert table["encoder simclr"]["scores+maps"] == 3.0 and table["encoder simclr"]["cells"] == 2
    assert table["detector ae"]["head/detector fit"] == 7.0 and table["detector ae"]["data"] == 1.0


def test_phases_are_written_only_when_asked_and_lines_add_up(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    quiet = Phases.from_env(0.0)
    quiet.mark("setup")
    quiet.save()                                   # no file named: nothing written
    assert not list(tmp_path.iterdir())
    path = tmp_path / "phases.json"
    monkeypatch.setenv(ENV, str(path))
    phases = Phases.from_env(100.0)
    phases.data.update(started_at=101.0)
    phases._last = 101.0
    phases.data["phases"] = {"setup": 2.0, "preflight": 1.0, "estimate": 3.0, "units": 20.0, "report": 5.0}
    phases.data["info"] = {"workers": 1, "threads": 1, "record_writing_s": 0.5, "planned_s": 25.0}
    phases.save()
    data = json.loads(path.read_text())
    data["ended_at"] = 132.0
    lines = "\n".join(profile_lines(data, [_record("vae", encoder_fit_s=12.0, predict_s=4.0)], 33.0, 99.0))
    assert "start-up (interpreter, imports, grid, executor): 3.0 s" in lines     # 1 s to import + 2 s setup
    assert "not in the records' timings" in lines and ": 3.5 s" in lines         # 20 - 16 - 0.5
    assert "report: 5.0 s" in lines and "exit (interpreter shutdown): 0.0 s" in lines
