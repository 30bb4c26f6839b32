"""One experiment directory over its lifetime (no torch, no Ray): what makes it the same experiment
(``identity``, ``provenance``), the groups' records as the one truth of what finished (``records``, their
histories as columns: ``histories``), the study that plans what runs next from them (``study``), its tables
(``tables``) and an experiment on record read back (``reader``)."""

from ablate.study.identity import growth, identity, saved_identity
from ablate.study.reader import experiment_tables, read_experiment, tables_from_records
from ablate.study.records import Found, Listing, list_records, make_record
from ablate.study.study import Group, Study
from ablate.study.tables import history_table, read_csvs, trials_table, write_csvs

__all__ = [
    "growth",
    "identity",
    "saved_identity",
    "experiment_tables",
    "read_experiment",
    "tables_from_records",
    "Found",
    "Listing",
    "list_records",
    "make_record",
    "Group",
    "Study",
    "history_table",
    "read_csvs",
    "trials_table",
    "write_csvs",
]
