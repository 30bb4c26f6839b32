"""From tables to the answer (pandas and scipy; no torch, no Ray, no study): fixed-n statistics (``stats``),
anytime-valid ones (``sequential``), the judging of an --until-resolved round (``rounds``), the ablation table
(``table``), the report's words (``findings``, one ``Analysis`` computed once), its figures, the page, the W&B
Report, and ``ablate.compare``'s paired judgement (``compare``)."""

from ablate.analysis.findings import Analysis
from ablate.analysis.page import Page
from ablate.analysis.stats import effects, paired, stable_lrs
from ablate.analysis.table import ablation_table

__all__ = ["Analysis", "Page", "effects", "paired", "stable_lrs", "ablation_table"]
