"""One owner each: what became of a trial (``Status``, with ``is_finished``) and the question a study answers
(``Question``, from a config or from tables on record; the default one said by name)."""

import pandas as pd

from ablate.spec.config import ExperimentConfig
from ablate.spec.question import Question
from ablate.spec.status import Status


def test_a_status_is_its_name_and_says_whether_it_is_an_outcome():
    assert f"{Status.TERMINATED}" == "TERMINATED" and Status("DIVERGED") is Status.DIVERGED
    assert Status.finished() == ("TERMINATED", "DIVERGED")
    assert {s for s in Status if s.is_ended()} == {
        Status.TERMINATED,
        Status.DIVERGED,
        Status.STOPPED_EARLY,
        Status.ERROR,
    }
    assert pd.DataFrame({"status": ["TERMINATED", "ERROR"]})["status"].isin(Status.finished()).tolist() == [True, False]


def test_the_question_of_a_config_and_of_its_tables_on_record_agree():
    cfg = ExperimentConfig.model_validate(
        {
            "blocks": ["baseline", "skipinit"],
            "depths": [8],
            "lrs": [0.1, 0.2],
            "seeds": [0, 1],
            "sweep": {"weight_decay": [0.0, 0.0005]},
            "compare": {"axis": "weight_decay", "reference": 5e-4},
        }
    )
    q = Question.of_config(cfg)
    trials = pd.DataFrame(
        [{"block": "baseline", "depth": 8, "lr": 0.1, "seed": 0, "weight_decay": 0.0005, "trial_id": "x"}]
    )
    on_record = Question.of_tables({"compare": {"axis": "weight_decay", "reference": 0.0005}}, trials)
    assert (q.subject, q.reference, q.context) == (on_record.subject, on_record.reference, on_record.context)
    assert q.context == ["block", "depth", "lr"] and q.cells == ["block", "depth"]
    assert Question.of_tables({}, trials) == Question.default(q.axes) and Question.default().reference == "baseline"
