"""The pair judge over a real model endpoint (a loopback OpenAI-compatible server): scores,
the judge strategy, and confirmation of error-site and consensus pairs, through the asset too."""

from __future__ import annotations

import json
import math
import re

import dagster as dg
import pytest

from assets.pairs.assets import preference_pairs
from assets.pairs.judge import JUDGE_SYSTEM, PairJudge, confirm_pairs, parse_score
from assets.pairs.strategies import build_pairs, make_strategy, steps_from_rows
from assets.pairs.tables import PREFERENCE_PAIRS
from assets.teachers.tables import TEACHER_RESPONSES
from assets.traces.tables import AGENT_STEPS
from resources.lake import DeltaLake
from tests.pairs.data import session
from tests.rag.loopback import LoopbackLLM
from tests.sessions import DAY, put_sessions

KEY_ENV, KEY = "PAIR_JUDGE_TEST_KEY", "sk-judge-test-never-stored-42"
BAD = ("Sure! Sure!", "offset", "Je pense", "can't help")


def candidate(body: dict) -> str:
    return body["messages"][-1]["content"].split("Candidate next message:\n", 1)[1]


def fair(body: dict) -> str:
    """A judge that dislikes looping, the bad Read offset, French and refusals."""
    return "Score: 2" if any(b in candidate(body) for b in BAD) else "Score: 8"


def _rows():
    steps, teachers = session("sess-a")
    return steps, teachers


def _pairs():
    steps, teachers = _rows()
    strategies = [make_strategy("error_site"), make_strategy("consensus")]
    rows, _ = build_pairs(steps_from_rows(steps, teachers), strategies)
    return rows


def test_the_judge_asks_the_configured_model(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    with LoopbackLLM(reply=fair, model="judge-large") as srv:
        judge = PairJudge(model="judge-large", base_url=srv.base_url, api_key_env=KEY_ENV)
        scorer = judge.scorer()
        prompt = [{"role": "user", "content": "fix utils.py"}]
        answers = [{"role": "assistant", "content": "Edit utils.py to strip the dash."},
                   {"role": "assistant", "content": "Sure! Sure! Sure!"},
                   {"role": "assistant", "content": "Edit utils.py to strip the dash."}]
        assert scorer.score(prompt, answers) == [8.0, 2.0, 8.0]
        assert srv.count == 2  # the same question is asked once
        body = srv.requests[0]
        assert body["model"] == "judge-large" and body["temperature"] == 0.0 and body["max_tokens"] == 16
        assert body["messages"][0] == {"role": "system", "content": JUDGE_SYSTEM}
        assert srv.auth_headers == [f"Bearer {KEY}"] * 2
        assert scorer.stats.as_dict() == {"calls": 2, "cached": 1, "errors": {}, "unparsed": 0}
        assert scorer.usage["calls"] == 2 and scorer.usage["input_tokens"] == 20
    assert KEY not in judge.describe() and "judge-large" in judge.describe()


def test_unparseable_and_failed_answers_have_no_score():
    with LoopbackLLM(reply="I think it is fine", model="vague") as srv:
        s = PairJudge(model="vague", base_url=srv.base_url).scorer()
        assert math.isnan(s.score([{"role": "user", "content": "x"}], [{"role": "assistant", "content": "y"}])[0])
        assert s.stats.unparsed == 1
    with LoopbackLLM() as down:
        down.mode = "fail"
        s = PairJudge(model="m", base_url=down.base_url, max_attempts=2).scorer()
        rows = _pairs()
        with pytest.raises(RuntimeError, match="answered none"):
            confirm_pairs(rows, s)
        assert s.stats.errors == {"http_500": 2 * len(rows)}
    assert parse_score("Score: 7.5") == 7.5 and parse_score("I'd say 3/10") == 3.0
    with pytest.raises(ValueError):
        parse_score("no number here")


def test_error_site_and_consensus_pairs_are_confirmed_by_the_judge():
    rows = _pairs()
    assert sorted(r["strategy"] for r in rows) == ["consensus", "consensus", "error_site"]
    with LoopbackLLM(reply=fair) as srv:
        kept, dropped, rep = confirm_pairs(rows, PairJudge(model="j", base_url=srv.base_url).scorer())
    assert len(kept) == 3 and dropped == [] and rep.as_dict() == {"checked": 3, "kept": 3, "dropped": {}}

    # a judge that prefers the original's bad Read at the error site: that pair is dropped
    def contrarian(body):
        c = candidate(body)
        return "Score: 6" if "offset" in c else ("Score: 5" if "Let me read utils.py" in c else fair(body))

    with LoopbackLLM(reply=contrarian) as srv:
        kept, dropped, rep = confirm_pairs(rows, PairJudge(model="j", base_url=srv.base_url).scorer(), margin=1.0)
    assert [r["strategy"] for r in dropped] == ["error_site"] and dropped[0]["invalid_rule"] == "judge_disagrees"
    assert dropped[0]["invalid_reason"] == "the judge scored chosen 5 and rejected 6 (needs chosen >= rejected + 1)"
    assert len(kept) == 2 and rep.dropped == {"judge_disagrees": 1} and rep.examples[0]["rule"] == "judge_disagrees"
    # only the listed strategies are checked
    with LoopbackLLM(reply=contrarian) as srv:
        kept, dropped, rep = confirm_pairs(rows, PairJudge(model="j", base_url=srv.base_url).scorer(),
                                           strategies=["consensus"])
        assert srv.count == 4 and len(kept) == 3 and rep.checked == 2


def test_the_judge_can_be_a_teacher_of_the_pool(tmp_path):
    with LoopbackLLM(reply=fair, model="pool-model") as srv:
        pool = tmp_path / "pool.yaml"
        pool.write_text(json.dumps({"teachers": [{
            "name": "big", "base_url": srv.base_url, "model": "pool-model", "temperature": 0.9,
            "system_prompt": "You are a pirate.", "max_tokens": 900}]}))
        judge = PairJudge(teacher="big", pool_file=str(pool))
        spec = judge.spec()
        assert (spec.model, spec.temperature, spec.system_prompt, spec.max_tokens) == ("pool-model", 0.0, None, 16)
        assert judge.score([{"role": "user", "content": "q"}], [{"role": "assistant", "content": "Sure! Sure!"}]) == [2.0]
        assert srv.requests[0]["messages"][0]["content"] == JUDGE_SYSTEM  # the judge's instructions, not the pirate's


def _lake(tmp_path):
    lake = DeltaLake(root=str(tmp_path / "lake"))
    steps, teachers = _rows()
    put_sessions(lake, AGENT_STEPS, steps, keys=["sess-a"])
    put_sessions(lake, TEACHER_RESPONSES, teachers, keys=["sess-a"])
    return lake


def _materialize(lake, judge, strategies=None):
    with dg.instance_for_test() as instance:
        cfg = {"ops": {"gold__preference_pairs": {"config": {"strategies": strategies}}}} if strategies else None
        res = dg.materialize([preference_pairs], partition_key=DAY, instance=instance, run_config=cfg,
                             resources={"lake": lake, "pair_judge": judge})
        assert res.success
        return res.asset_materializations_for_node("gold__preference_pairs")[0].metadata


def test_preference_pairs_with_a_judge_configured(tmp_path, tiny_tokenizer):
    lake = _lake(tmp_path)

    def picky(body):  # dislikes the error-site teacher answer too
        return "Score: 1" if "Let me read utils.py" in candidate(body) else fair(body)

    with LoopbackLLM(reply=picky) as srv:
        md = _materialize(lake, PairJudge(model="judge", base_url=srv.base_url))
    rows = lake.read(PREFERENCE_PAIRS).to_pylist()
    # the error-site pair is marked with the judge's rule; the judge strategy (listed before
    # consensus) owns the consensus steps' pairs, which are the same best-vs-worst pairs
    site = [r for r in rows if r["strategy"] == "error_site"]
    assert len(site) == 1 and site[0]["invalid_rule"] == "judge_disagrees"
    assert "chosen 1 and rejected 2" in site[0]["invalid_reason"]
    assert [r for r in rows if r["invalid_rule"] is None]
    conf = md["judge_confirmation"].value
    assert conf["dropped"] == {"judge_disagrees": 1} and conf["kept"] == conf["checked"] - 1
    assert "judge_disagrees" in md["judge_dropped_examples"].value
    assert md["judge_calls"].value["calls"] > 0 and "judge" in md["judge"].value
    # the judge strategy's own pair: best vs worst by the judge's scores
    jp = [r for r in rows if r["strategy"] == "judge"]
    assert all(r["score_chosen"] - r["score_rejected"] > 1.0 for r in jp)


def test_judge_strategy_alone_through_the_resource(tmp_path):
    lake = _lake(tmp_path)

    def likes_tools(body):  # tool calls render as name({...}) in the judge's question
        return "Score: 9" if re.search(r"\w+\(\{", candidate(body)) else "Score: 2"

    with LoopbackLLM(reply=likes_tools) as srv:
        md = _materialize(lake, PairJudge(model="judge", base_url=srv.base_url), strategies=["judge"])
    rows = lake.read(PREFERENCE_PAIRS).to_pylist()
    assert rows and {r["strategy"] for r in rows} == {"judge"}
    for r in rows:
        assert r["score_chosen"] == 9.0 and r["score_rejected"] == 2.0
        assert json.loads(r["chosen"])[0].get("tool_calls")
    assert md["judge_confirmation"].value["checked"] == 0


def test_pairs_the_judge_drops_reach_pair_rejections_through_the_recipe(tmp_path, tiny_tokenizer):
    from assets.pairs.assets import normalized_pairs
    from assets.pairs.normalizer import Normalizer
    from assets.pairs.tables import NORMALIZED_PAIRS, PAIR_REJECTIONS

    lake = _lake(tmp_path)

    def picky(body):
        return "Score: 1" if "Let me read utils.py" in candidate(body) else fair(body)

    with LoopbackLLM(reply=picky) as srv:
        _materialize(lake, PairJudge(model="judge", base_url=srv.base_url))
    res = dg.materialize([normalized_pairs], instance=dg.DagsterInstance.ephemeral(),
                         resources={"lake": lake, "normalizer": Normalizer(verifier_tokenizer=tiny_tokenizer)})
    assert res.success
    site_id = [r["pair_id"] for r in lake.read(PREFERENCE_PAIRS).to_pylist() if r["strategy"] == "error_site"][0]
    rejected = {r["pair_id"]: r for r in lake.read(PAIR_REJECTIONS).to_pylist()}
    assert rejected[site_id]["op"] == "pair_validity_filter"
    assert rejected[site_id]["reason"].startswith("judge_disagrees: the judge scored chosen 1")
    assert site_id not in {r["pair_id"] for r in lake.read(NORMALIZED_PAIRS, columns=["pair_id"]).to_pylist()}
