"""The benchmark runs for real on a tiny CPU setting and reports what docs/benchmarks.md quotes (a system test by
its cost: ~15 s of measuring, torchvision's pipeline included)."""

import json

import pytest

from ablate.bench import main, trainer_rates, tutorial_loop

pytestmark = pytest.mark.slow


def test_tutorial_loop_and_trainer_report_rates():
    t = tutorial_loop(depth=8, batch_size=64, n_images=128, epochs=2, workers=0)
    r = trainer_rates(depth=8, batch_size=64, n_images=128, epochs=2, threads=1)
    assert len(t) == 2 and len(r) == 2 and min(t + r) > 0


def test_cli_writes_json_lines(tmp_path):
    out = tmp_path / "bench.jsonl"
    assert (
        main(
            [
                "--depths",
                "8",
                "--epochs",
                "2",
                "--images",
                "128",
                "--batch-size",
                "64",
                "--workers",
                "0",
                "--variants",
                "default",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["what"] for r in recs] == ["tutorial", "trainer:default"]
    assert recs[1]["vs_tutorial"] > 0 and "hardware" in recs[1]
