"""The study's report (:mod:`pyro_moe.study.report`): tables, and prose written from the
numbers it reports — the same sentence slot says "below" or "above" as the numbers do."""

from __future__ import annotations

import math

import pytest

from pyro_moe.study import DATASETS, PUBLISHED_S, ROWS, Report, main_table
from pyro_moe.study.report import differences, fmt, versus
from pyro_moe.study.stats import summary


def make_report(medians: dict[tuple[str, str], float], floors: dict[str, float], methods=("cavi",)):
    """A Report with one seed per cell: ``medians[(dataset, choice)]`` (CAVI; SVI x10)."""
    table = []
    for ds in DATASETS:
        for choice in ROWS:
            entry = {
                "dataset": ds,
                "choice": choice,
                "published": PUBLISHED_S[ds].get(choice),
                "methods": {},
            }
            for m in methods:
                v = medians.get((ds, choice), 1.0) * (10.0 if m == "svi" else 1.0)
                entry["methods"][m] = {"seeds": [0], "S": [v], "summary": summary([v])}
            table.append(entry)
    return Report(
        settings={"methods": list(methods), "seeds_by_method": dict.fromkeys(methods, 1)},
        table=table,
        floor={ds: summary([v]) for ds, v in floors.items()},
    )


MEASURED = {  # the README's full run (CAVI medians)
    ("synthetic_1", "f2"): 3e-26,
    ("synthetic_2", "f1"): 1.4e-3,
    ("synthetic_2", "f2"): 1.4e-3,
    ("synthetic_2", "f3"): 1.4e-3,
    ("synthetic_3", "f1"): 0.21,
    ("synthetic_3", "f2"): 0.50,
    ("synthetic_3", "f3"): 0.49,
    ("synthetic_3", "f3 + noise expert"): 3.5e-3,
}
FLOORS = {"synthetic_1": 0.0, "synthetic_2": 1.4e-3, "synthetic_3": 1.4e-3}


def test_versus_says_what_the_numbers_say():
    assert versus(1e-3, 1e-3) == versus(1.9e-3, 1e-3) == "within a factor 2 of"
    assert versus(3.5e-3, 1.4e-3) == "2.5× above"
    assert versus(1e-5, 1e-3) == "2 orders of magnitude below"
    assert "invalid" in versus(math.inf, 1e-3)


def test_prose_follows_the_measured_values():
    text = differences(make_report(MEASURED, FLOORS))
    s3 = text.split("**Synthetic 3**")[1]
    assert "Neither f2 nor f3 reaches the published 0.001" in s3
    assert "more than 10× above the floor" in s3
    # the noise expert: 3.5e-3 is 2.5x the floor; the prose must not call it "at the floor"
    assert "0.0035, 2 orders of magnitude below f3 without it, and 2.5× above the floor" in s3
    s2 = text.split("**Synthetic 2**")[1].split("**Synthetic 3**")[0]
    assert "within a factor 2 of the floor" in s2 and "erratum a" in s2
    s1 = text.split("**Synthetic 1**")[1].split("**Synthetic 2**")[0]
    assert "orders of magnitude below the published value — round-off" in s1


def test_the_same_slot_turns_when_the_numbers_do():
    good = dict(MEASURED)
    good.update({("synthetic_3", "f2"): 1e-3, ("synthetic_3", "f3"): 1.2e-3})
    good[("synthetic_3", "f3 + noise expert")] = 1.5e-3
    good[("synthetic_2", "f1")] = 0.6
    text = differences(make_report(good, FLOORS))
    s3 = text.split("**Synthetic 3**")[1]
    assert "f2 and f3 reach the published value" in s3 and "Neither" not in s3
    assert "more than 10×" not in s3
    assert "within a factor 2 of the floor" in s3
    s2 = text.split("**Synthetic 2**")[1].split("**Synthetic 3**")[0]
    assert "erratum a" not in s2  # f1 failed like the study's: no explanation of a success


def test_svi_sentence_only_with_svi_numbers():
    report = make_report(MEASURED, FLOORS, methods=("cavi", "svi"))
    s1 = differences(report).split("**Synthetic 1**")[1].split("**Synthetic 2**")[0]
    assert "SVI gives" in s1
    assert "SVI gives" not in differences(make_report(MEASURED, FLOORS))


def test_tables_list_every_cell():
    report = make_report(MEASURED, FLOORS)
    text = main_table(report)
    assert len(text.splitlines()) == 2 + len(DATASETS) * len(ROWS) + 1
    md = report.table_markdown()
    assert md.count("\n") == 1 + len(DATASETS) * len(ROWS)
    assert fmt(0.49) in md and "| 0.0014 |" in md


@pytest.mark.parametrize("x, text", [(None, "–"), (math.inf, "inf"), (0.0, "0"), (0.25, "0.25")])
def test_fmt(x, text):
    assert fmt(x) == text
