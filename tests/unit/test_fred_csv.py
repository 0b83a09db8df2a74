import pandas as pd
import pytest

from pefm.data.fred_csv import parse_fred_csv
from pefm.data.validation import ValidationError


def issues_of(text: str | bytes) -> list[dict]:
    with pytest.raises(ValidationError) as info:
        parse_fred_csv(text)
    return [issue.to_dict() for issue in info.value.details]


def test_parses_fred_csv_with_missing_values_and_lowercases_the_id():
    parsed = parse_fred_csv("DATE,GDPC1\n2020-01-01,100.5\n2020-04-01,.\n2020-07-01,-3e2\n\n")
    assert parsed.series_id == "gdpc1"
    assert parsed.missing == 1
    assert parsed.values.index.tolist() == [pd.Timestamp("2020-01-01"), pd.Timestamp("2020-07-01")]
    assert parsed.values.tolist() == [100.5, -300.0]
    assert parsed.lines == [2, 4]


def test_accepts_the_newer_observation_date_header_a_bom_and_crlf():
    parsed = parse_fred_csv("\ufeffobservation_date,UNRATE\r\n1948-01-01,3.4\r\n1948-02-01,\r\n".encode())
    assert parsed.series_id == "unrate"
    assert parsed.values.tolist() == [3.4]
    assert parsed.missing == 1


def test_a_header_ending_in_a_lone_cr_keeps_the_first_row():
    """The csv module ends a row at a lone CR; the fast path split the header off at the first LF
    and dropped the first data row with it (the counts of commas and lines still agreed)."""
    parsed = parse_fred_csv(b"DATE,GDP\r2020-01-01,1\n2020-04-01,2\n2020-07-01,3\n")
    assert parsed.values.to_dict() == {
        pd.Timestamp("2020-01-01"): 1.0,
        pd.Timestamp("2020-04-01"): 2.0,
        pd.Timestamp("2020-07-01"): 3.0,
    }
    assert parsed.lines == [2, 3, 4]


def test_bad_date_names_line_and_field():
    assert issues_of("DATE,X\n2020-01-01,1\n2020-13-01,2\n01/03/2020,3\n0001-01-01,4\n") == [
        {"line": 3, "field": "date", "message": "'2020-13-01' is not a YYYY-MM-DD date in 1700..2200"},
        {"line": 4, "field": "date", "message": "'01/03/2020' is not a YYYY-MM-DD date in 1700..2200"},
        {"line": 5, "field": "date", "message": "'0001-01-01' is not a YYYY-MM-DD date in 1700..2200"},
    ]


@pytest.mark.parametrize("value", ["abc", "nan", "inf", "-Infinity", "1_000", "1,5", "0x10"])
def test_non_numeric_or_non_finite_value_names_line_and_field(value: str):
    assert issues_of(f'DATE,X\n2020-01-01,1\n2020-02-01,"{value}"\n') == [
        {"line": 3, "field": "value", "message": f"{value!r} is not a finite number"}
    ]


def test_duplicate_date_names_both_lines():
    assert issues_of("DATE,X\n2020-01-01,1\n2020-02-01,2\n2020-01-01,1\n") == [
        {"line": 4, "field": "date", "message": "duplicate date 2020-01-01 (first on line 2)"}
    ]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("DATE,X,Y", "3 columns"),
        ("when,X", "first column is 'when'"),
        ("DATE,not an id", "'not an id' is not a series id"),
        ("DATE,\u212ad1", "is not a series id"),  # the Kelvin sign lower()s to a k
        ("DATE,\u00a0d1", "is not a series id"),  # a no-break space strip()s away
        ("", "empty file"),
    ],
)
def test_wrong_header_is_line_1(header: str, message: str):
    [issue] = issues_of(f"{header}\n2020-01-01,1\n" if header else "")
    assert issue["line"] == 1
    assert issue["field"] == "header"
    assert message in issue["message"]


def test_wrong_field_count_and_no_rows_and_bad_encoding_are_reported():
    assert issues_of("DATE,X\n2020-01-01\n") == [{"line": 2, "field": "row", "message": "expected 2 fields, got 1"}]
    assert issues_of("DATE,X\n") == [{"line": 2, "field": "body", "message": "no data rows after the header"}]
    assert issues_of(b"DATE,X\n2020-01-01,\xff\n")[0]["field"] == "body"


def test_every_problem_is_reported_not_just_the_first():
    issues = issues_of("DATE,X\nbad,1\n2020-01-01,x\n2020-02-01,1,2\n")
    assert [(i["line"], i["field"]) for i in issues] == [(2, "date"), (3, "value"), (4, "row")]


def test_values_are_the_nearest_doubles_to_their_text_on_either_path():
    """The fast path read values with pandas' to_numeric, 1-2 ulp off for about one full-precision
    text in six: a file stored other numbers than the same file with a blank line in it (the slow
    path, float()), and every reload of it was a revision."""
    import random

    rnd = random.Random(16)
    texts = [repr(rnd.uniform(-1e6, 1e6) * 10 ** rnd.randint(-8, 8)) for _ in range(2000)]
    days = [f"{1900 + i // 12:04d}-{i % 12 + 1:02d}-01" for i in range(len(texts))]
    body = "DATE,X\n" + "".join(f"{d},{t}\n" for d, t in zip(days, texts, strict=True))
    fast = parse_fred_csv(body).values.tolist()
    slow = parse_fred_csv(body.replace("\n", "\n\n", 1)).values.tolist()  # a blank line: the careful parser
    assert fast == slow == [float(t) for t in texts]
