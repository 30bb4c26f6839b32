"""The question a study answers: each value of one axis (the *subject*) against a reference value, paired by
seed, within every cell of the other axes (the *context*).  One owner, two ways in: ``Question.of_config`` for
an experiment being run, ``Question.of_tables`` for one on record (its identity and its tables' axes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from ablate.formatting import value_text
from ablate.spec.axes import AXES, BASELINE, LR, axes_of, context_of

__all__ = ["Question"]


@dataclass
class Question:
    """What the report answers: each value of ``subject`` against ``reference``, paired by seed, within every
    cell of the ``context`` axes; ``cells`` are the context's axes but ``lr`` (along which the stable LR
    range and the best-LR table look)."""

    subject: str
    reference: object
    axes: List[str]
    context: List[str]

    @classmethod
    def default(cls, axes=AXES) -> "Question":
        """The project's question, said by name: each block against baseline at every other axis but the seed."""
        return cls("block", BASELINE, list(axes), context_of(list(axes), "block"))

    @classmethod
    def of_config(cls, cfg) -> "Question":
        """The question an experiment config asks (its ``compare``, its axes)."""
        subject, reference = cfg.subject()
        axes = list(cfg.axes())
        return cls(subject, reference, axes, context_of(axes, subject))

    @property
    def cells(self) -> List[str]:
        return [c for c in self.context if c != LR]

    def who(self, value) -> str:
        """A compared value in words: a block by its name, any other axis as "axis value"."""
        return str(value) if self.subject == "block" else f"{self.subject} {value_text(value)}"

    def words(self, names: Optional[List[str]] = None) -> str:
        """Axes in words: "depth and LR", "depth, LR and weight_decay"."""
        names = [("LR" if n == LR else n) for n in (self.context if names is None else names)]
        return (", ".join(names[:-1]) + " and " + names[-1]) if len(names) > 1 else (names[0] if names else "grid")

    def trial(self, r: Dict) -> str:
        """One trial in words: "skipinit d56 lr 0.2 seed 1", then any swept setting's value."""
        four = f"{r['block']} d{r['depth']} lr {value_text(float(r['lr']))} seed {r['seed']}"
        return ", ".join([four, *(f"{a} {value_text(r[a])}" for a in self.axes if a not in AXES)])

    def where(self, r: Dict, keys: Optional[List[str]] = None) -> str:
        return ", ".join(f"{c} {value_text(r[c])}" for c in (self.context if keys is None else keys)) or "every trial"

    @classmethod
    def of_tables(cls, meta: Dict, trials) -> "Question":
        """The question an experiment on record asks: its identity's ``compare`` (``meta``; the default question,
        each block against baseline, where it names none) and its tables' own axes (``trials``)."""
        axes = axes_of(trials)
        compare = meta.get("compare") or {}
        subject = compare.get("axis") or "block"
        reference = compare.get("reference")
        if reference is None:
            reference = BASELINE
        elif subject in trials and len(trials):  # as the table holds it (a number, a bool, a name)
            reference = next(
                (v for v in trials[subject].unique() if str(value_text(v)) == str(value_text(reference))), reference
            )
        return cls(subject, reference, axes, context_of(axes, subject))
