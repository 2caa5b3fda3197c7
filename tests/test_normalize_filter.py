import re
import string

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from slimpipe.schemas import RECORD
from slimpipe.stages.filters import FilterStage
from slimpipe.stages.filters.length import LengthFilter
from slimpipe.stages.normalize import Normalizer, normalize_text


def slimpajama_reference(text: str) -> str:
    """SlimPajama's normalisation, written the way its scripts wrote it."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return re.sub(r"\s+", " ", text.strip())


@settings(max_examples=2000, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list(string.printable) + list("\x1c\x1f\x85\xa0\u2028\u3000İßÉ€😀‘’")), max_size=80
    )
)
def test_normalize_matches_slimpajama(text):
    assert normalize_text(text) == slimpajama_reference(text)


def test_normalize_on_real_text(c4_docs):
    for d in c4_docs[:200]:
        assert normalize_text(d["text"]) == slimpajama_reference(d["text"])


def _records(texts, rejected=()):
    n = len(texts)
    t = pa.table({f.name: pa.nulls(n, f.type) for f in RECORD}, schema=RECORD)
    t = t.set_column(1, "text", pa.array(texts, pa.large_string()))
    stage = ["read" if i in rejected else None for i in range(n)]
    return t.set_column(RECORD.get_field_index("reject_stage"), "reject_stage", pa.array(stage, pa.string()))


def test_normalizer_hashes_normalised_text():
    out = Normalizer()(_records(["Hello,   World!", "hello world", "other"], rejected={2})).to_pylist()
    assert out[0]["text_hash"] == out[1]["text_hash"] and out[0]["norm_chars"] == 11
    assert out[2]["text_hash"] is None
    raw = Normalizer(hash_normalized=False)(_records(["Hello,   World!", "hello world"])).to_pylist()
    assert raw[0]["text_hash"] != raw[1]["text_hash"]


def test_length_rule_boundary_and_reason():
    texts = ["x" * 199, "y" * 200, "!!" + "z " * 99 + "...", "short"]
    out = FilterStage({"length": {"enabled": True, "min_chars": 200}})(Normalizer()(_records(texts, rejected={3})))
    rows = out.to_pylist()
    assert rows[0]["reject_stage"] == "filter" and rows[0]["reject_reason"] == "length.too_short"
    assert rows[0]["reject_value"] == 199.0 and "under the minimum of 200" in rows[0]["reject_detail"]
    assert rows[1]["reject_stage"] is None
    assert rows[2]["reject_value"] == 197.0  # "z z ... z": punctuation gone, 99 z's and 98 spaces
    assert rows[3]["reject_stage"] == "read"  # rejected earlier: untouched


def test_disabled_filter_keeps_everything():
    out = FilterStage({"length": {"enabled": False, "min_chars": 200}})(Normalizer()(_records(["a"])))
    assert out.to_pylist()[0]["reject_stage"] is None
    from slimpipe.stages.filters.doc import Doc

    assert LengthFilter(5).check(Doc("abc", norm_chars=3)).detail.startswith("3 normalised characters")
